"""`nfldm eval`: reconstruction and generation figures on held-out captures."""
