"""One Lightning module per training stage, with the run each `nfldm train` command performs, and losses."""
