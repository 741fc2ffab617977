# The two commands of the README:  `make demo`  and  `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_STORE ?= data/town03.zarr

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.nfldm-installed

$(VENV)/.nfldm-installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

## Set everything up and run the main job on the built-in defaults: a short Town03 capture, then a scene from the
## shipped default model driven through by the capture rig (MP4 + PNG frames) and an Open3D screenshot.
demo: setup
	$(BIN)/sim_bridge collect --town Town03 --out $(DEMO_STORE) --episodes 1 --frames 40 --overwrite
	$(BIN)/sim_bridge info $(DEMO_STORE)
	bash scripts/demo.sh out/demo

## Set everything up, lint (ruff, config in pyproject.toml) and run the whole test suite (CPU).
test: setup
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/nfldm bench --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
