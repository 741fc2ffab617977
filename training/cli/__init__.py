"""The training commands plugged into `nfldm` (click); heavy imports inside callbacks."""
