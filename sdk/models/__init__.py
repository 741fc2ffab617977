"""The networks of the NF-LDM stages: the scene auto-encoder (stage 1), the latent voxel auto-encoder with its
vector quantiser (stage 2), the hierarchical denoisers (stage 3), and their shared blocks.

Each is a config dataclass plus an `nn.Module` with `nfldm_sdk.persistence.PretrainedMixin` (config.json +
model.safetensors).
"""
