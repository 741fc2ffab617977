"""The `nfldm` command line (click); commands import heavy libraries inside their callbacks."""
