"""One Lightning module per training stage, with the run each `nfldm train` command performs; the losses and the
diffusion training shared by stage 3 and the prior."""
