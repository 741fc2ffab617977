"""The distribution installs the three import packages, their console scripts and plugin commands."""
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"nfldm_sdk": "sdk", "nfldm_training": "training", "sim_bridge": "sim_bridge"}


def test_every_subpackage_is_listed_in_pyproject():
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    found = set()
    for name, folder in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    # Data-only packages (the shipped default bundle): every file of their folder is declared package data.
    data = set(setuptools_cfg["package-data"])
    assert found == listed - data, f"pyproject [tool.setuptools] packages must list exactly {sorted(found)}"
    root = ROOT / setuptools_cfg["package-dir"]["nfldm_sdk.default_model"]
    for f in root.rglob("*"):
        if f.is_file():
            pkg = ".".join(["nfldm_sdk.default_model", *f.parent.relative_to(root).parts])
            assert f.name in setuptools_cfg["package-data"].get(pkg, []), f"{f} is not package data of {pkg}"


def test_sdk_and_bridge_are_independent():
    # Dependency direction (docs/architecture.md): nfldm_sdk and sim_bridge import nothing of each other.
    for pkg, other in [("sdk", "sim_bridge"), ("sim_bridge", "nfldm_sdk"), ("sdk", "nfldm_training"), ("sim_bridge", "nfldm_training")]:
        for f in (ROOT / pkg).rglob("*.py"):
            text = f.read_text()
            assert f"import {other}" not in text and f"from {other}" not in text, f"{f} imports {other}"


def test_imports_come_from_the_installed_distribution():
    code = "import nfldm_sdk, sim_bridge, nfldm_training; print(nfldm_sdk.__file__, sim_bridge.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True).stdout
    assert "sdk" in out and "sim_bridge" in out


def test_console_scripts_run():
    bindir = Path(sys.executable).parent
    for script in ("sim_bridge", "nfldm"):
        out = subprocess.run([str(bindir / script), "--help"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    listing = subprocess.run([str(bindir / "nfldm"), "--help"], capture_output=True, text=True).stdout
    assert "train" in listing and "unavailable" not in listing
