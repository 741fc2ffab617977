"""nfldm_training — the training stages of NF-LDM on capture stores: presets (`configs`), datasets (`data`),
stores written between stages (`stores`), one Lightning module per stage (`modules`), the run protocol (`runs`),
metrics and evaluation, the training commands (`cli`) and `nfldm bench` (`benchmarks`).

Depends on `nfldm_sdk` (the networks and the bundle format) and `sim_bridge` (the capture-store reader).
"""
