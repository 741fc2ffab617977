"""The stage-1 preset table: its sizes, overrides by dotted key, the errors of an unknown preset or key, and the
JSON round trip of a run's config.json."""
import json

import pytest

from nfldm_training.configs.presets import PRESETS, get_preset
from nfldm_training.configs.run_config import load_run_config, save_run_config


def test_presets_table_overrides_and_json_round_trip(tmp_path):
    assert set(PRESETS) == {"tiny", "default", "small", "paper"}
    assert PRESETS["paper"].scene_ae.grid_shape == (32, 128, 128)              # 128×128×32 voxels
    d = PRESETS["default"].scene_ae                                            # the shipped model: 1×1×0.5 m voxels
    lo, hi = d.bounds
    assert d.image_size == (128, 128)
    assert [(b - a) / n for a, b, n in zip(lo, hi, d.grid_shape[::-1])] == [1.0, 1.0, 0.5]
    assert PRESETS["paper"].scene_ae.bounds == ((-16.0, -32.0, -2.0), (48.0, 32.0, 6.0))
    p = get_preset("tiny", {"scene_ae_train.max_steps": 7, "scene_ae.grid_shape": [4, 8, 8]})
    assert p.scene_ae_train.max_steps == 7 and p.scene_ae.grid_shape == (4, 8, 8)
    assert PRESETS["tiny"].scene_ae_train.max_steps != 7                       # the table is not modified
    with pytest.raises(KeyError, match="tiny, default, small, paper"):
        get_preset("huge")
    with pytest.raises(KeyError, match="max_steps"):
        get_preset("tiny", {"scene_ae_train.max_stepz": 1})
    with pytest.raises(ValueError, match="divisible"):
        get_preset("tiny", {"scene_ae.image_size": [30, 30]})
    path = save_run_config(tmp_path / "config.json", "scene-ae", p.name, p)
    assert load_run_config(path, "scene-ae").section == p
    assert json.loads(path.read_text())["config"]["scene_ae"]["grid_shape"] == [4, 8, 8]
