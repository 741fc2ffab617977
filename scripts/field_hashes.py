"""sha256 of the default model's generated fields for seeds 0-3 (density, features and bounds bytes), as JSON.

A refactoring that must not change behaviour keeps these hashes: run it before and after and compare::

    python scripts/field_hashes.py before.json   # on the old commit
    python scripts/field_hashes.py after.json    # on the new one
    diff before.json after.json

Hashes are of float32 CPU results with one torch thread; they are comparable on one machine and torch build only.
"""
import hashlib
import json
import sys

import torch

from nfldm_sdk import SceneGenerator


def field_hashes(seeds=range(4)) -> dict[int, str]:
    """``{seed: sha256 hex}`` of ``SceneGenerator.from_pretrained().generate(seed=seed)[0].field``."""
    torch.set_num_threads(1)
    gen = SceneGenerator.from_pretrained()
    out = {}
    for seed in seeds:
        field = gen.generate(seed=seed)[0].field
        h = hashlib.sha256()
        for t in (field.density, field.features, field.bounds):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        out[seed] = h.hexdigest()
    return out


if __name__ == "__main__":
    hashes = field_hashes()
    for seed, h in hashes.items():
        print(seed, h)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(hashes, f, indent=1)
