"""A plain ``pip install .`` (no extras) runs every user-facing command.

`test_every_third_party_import_is_declared` checks the source: each third-party import of ``sdk/``,
``sim_bridge/`` and ``training/`` (module-level or inside a function) belongs to a distribution that
``[project.dependencies]`` or a user extra (``carla``, ``video``) declares. `test_plain_install_runs_the_commands`
checks the result: it builds the wheel, makes a fresh virtual environment holding exactly the dependency closure of
nfldm's requirements without extras (each distribution of this environment linked in from its RECORD, so nothing
is downloaded or copied; what only the ``dev`` extra brings, pytest, ruff, ..., is absent), installs the wheel with
``--no-deps`` and runs the commands through that environment's console scripts.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = {"nfldm_sdk", "nfldm_training", "sim_bridge"}
#: Extras a user installs for a feature (the feature says which when it is missing); `dev` is not one of them.
USER_EXTRAS = ("carla", "video")


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> files importing it, over every import statement (functions included)."""
    found: dict[str, set[str]] = {}
    for folder in ("sdk", "sim_bridge", "training"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                else:
                    continue
                for m in mods:
                    top = m.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY and top != "__future__":
                        found.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared():
    project = PYPROJECT["project"]
    declared = _names(project["dependencies"])
    extras = {e: _names(project["optional-dependencies"][e]) for e in USER_EXTRAS}
    providers = metadata.packages_distributions()
    undeclared = {}
    for module, files in _third_party_imports().items():
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {sorted(files)}) is not installed here: declare and install it"
        if not dists & (declared | set().union(*extras.values())):
            undeclared[module] = sorted(files)
    assert not undeclared, f"imports of undeclared distributions (add them to [project.dependencies]): {undeclared}"


def test_dev_extra_declares_nothing_a_user_feature_imports():
    dev_only = _names(PYPROJECT["project"]["optional-dependencies"]["dev"]) - _names(PYPROJECT["project"]["dependencies"])
    providers = metadata.packages_distributions()
    imported = {canonicalize_name(d) for m in _third_party_imports() for d in providers.get(m, [])}
    user_extras = set().union(*(_names(PYPROJECT["project"]["optional-dependencies"][e]) for e in USER_EXTRAS))
    assert not (dev_only - user_extras) & imported


# ------------------------------------------------------------------------------------------ the fresh environment
def _closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions that `requirements` (no extras) need, recursively, markers evaluated here."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    out: dict[str, metadata.Distribution] = {}
    todo = [(Requirement(r), ("",)) for r in requirements]
    while todo:
        req, parent_extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in parent_extras):
            continue
        name = canonicalize_name(req.name)
        dist = installed.get(name)
        assert dist is not None, f"{req} is required but not installed in {sys.prefix}"
        assert req.specifier.contains(dist.version, prereleases=True), f"{req}: installed {dist.version}"
        key = name if not req.extras else f"{name}[{','.join(sorted(req.extras))}]"
        if key in out:
            continue
        out[key] = dist
        todo += [(Requirement(r), ("", *sorted(req.extras))) for r in dist.requires or []]
    return {canonicalize_name(d.metadata["Name"]): d for d in out.values()}


def _link_distributions(dists: dict[str, metadata.Distribution], site: Path) -> None:
    """Symlink each distribution's files (its RECORD) into `site`: whole top-level folders where no distribution
    outside `dists` shares them, file by file where one does (namespace folders)."""
    owners: dict[str, set[str]] = {}
    for d in metadata.distributions():
        for f in d.files or []:
            if f.parts[0] != "..":
                owners.setdefault(f.parts[0], set()).add(canonicalize_name(d.metadata["Name"]))
    for name, dist in dists.items():
        assert dist.files is not None, f"{name} has no RECORD: cannot link it"
        base = Path(dist.locate_file(""))
        for f in dist.files:
            if f.parts[0] == "..":                                   # console scripts etc. outside site-packages
                continue
            top = f.parts[0]
            exclusive = owners[top] <= set(dists)
            rel = Path(top) if exclusive else Path(*f.parts)
            target = site / rel
            if target.exists() or target.is_symlink() or not (base / rel).exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(base / rel)


@pytest.fixture(scope="module")
def plain_wheel(tmp_path_factory) -> Path:
    """nfldm's wheel, built from a copy of the checkout (which stays clean)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("sdk", "sim_bridge", "training", "assets"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(tmp / "wheel")], check=True, cwd=tmp)
    return next((tmp / "wheel").glob("nfldm-*.whl"))


@pytest.fixture(scope="module")
def plain_env(plain_wheel, tmp_path_factory):
    """A fresh venv with nfldm's wheel and exactly its dependency closure without extras: its bin folder."""
    tmp = tmp_path_factory.mktemp("plain")
    with zipfile.ZipFile(plain_wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.split(":", 1)[1].strip() for line in z.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    base_requires = [r for r in requires if Requirement(r).marker is None
                     or Requirement(r).marker.evaluate({"extra": ""})]
    env = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
    _link_distributions(_closure(base_requires), site)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(plain_wheel)], check=True)
    return env / "bin"


@pytest.mark.slow
def test_wheel_carries_the_default_bundle_byte_for_byte(plain_wheel):
    shipped = ROOT / "assets" / "models" / "default"
    expected = {f.relative_to(shipped).as_posix(): f.read_bytes() for f in shipped.rglob("*") if f.is_file()}
    with zipfile.ZipFile(plain_wheel) as z:
        packaged = {n.removeprefix("nfldm_sdk/default_model/"): z.read(n) for n in z.namelist()
                    if n.startswith("nfldm_sdk/default_model/")}
        assert not any(n.startswith("assets/") for n in z.namelist())     # data lives inside the import package
    assert {"manifest.json", "scene_ae/model.safetensors", "denoiser_f/config.json"} <= set(expected)
    assert packaged == expected


def _run(bindir: Path, *argv, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}")
    r = subprocess.run([str(bindir / argv[0]), *map(str, argv[1:])], capture_output=True, text=True, cwd=cwd, env=env)
    assert r.returncode == 0, f"{' '.join(map(str, argv))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.slow
def test_plain_install_has_no_dev_packages(plain_env, tmp_path):
    py = plain_env / "python"
    probe = "import importlib.util as u; print([m for m in ('pytest', 'ruff', 'carla', 'imageio_ffmpeg', 'skimage') " \
            "if u.find_spec(m)])"
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "['skimage']"                                 # a dependency now; dev and extras absent
    where = subprocess.run([str(py), "-c", "import nfldm_sdk; print(nfldm_sdk.__file__)"], capture_output=True,
                           text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(plain_env.parent)) and str(ROOT) not in where   # the wheel, not the checkout


#: Loads the default model with no path and prints where it came from, its bundle hash and a digest of one scene.
DEFAULT_MODEL_PROBE = """
import hashlib
from nfldm_sdk.models.bundle import default_model_path
from nfldm_sdk.pipelines.generator import SceneGenerator
g = SceneGenerator.from_pretrained(device="cpu")
f = g.generate(1, seed=0, steps=3)[0].field
print(default_model_path())
print(g.bundle_hash, hashlib.sha256(f.density.numpy().tobytes() + f.features.numpy().tobytes()).hexdigest())
"""


def _probe_default_model(python: Path, cwd: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "NFLDM_DEFAULT_MODEL")}
    r = subprocess.run([str(python), "-c", DEFAULT_MODEL_PROBE], capture_output=True, text=True, cwd=cwd,
                       env={**env, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-2:]


@pytest.mark.slow
def test_plain_install_loads_the_default_model_anywhere(plain_env, tmp_path):
    # From a folder outside the checkout, with no path and no $NFLDM_DEFAULT_MODEL: the wheel's own copy, which
    # generates the same scene as the checkout's assets/models/default.
    where, digest = _probe_default_model(plain_env / "python", tmp_path)
    assert Path(where).is_relative_to(plain_env.parent)                                 # inside the fresh venv
    assert Path(where).parts[-2:] == ("nfldm_sdk", "default_model") and str(ROOT) not in where
    checkout_where, checkout_digest = _probe_default_model(Path(sys.executable), tmp_path)
    assert Path(checkout_where) == ROOT / "assets" / "models" / "default"
    assert digest == checkout_digest


@pytest.mark.slow
def test_plain_install_runs_the_commands(plain_env, tmp_path):
    bundle = ROOT / "assets" / "models" / "default"
    _run(plain_env, "sim_bridge", "collect", "--backend", "procedural", "--town", "Town01", "--episodes", "1",
         "--frames", "2", "--width", "32", "--height", "32", "--rig", "front", "--out", "cap.zarr", "--quiet",
         cwd=tmp_path)
    _run(plain_env, "sim_bridge", "validate", "cap.zarr", cwd=tmp_path)
    _run(plain_env, "nfldm", "generate", "--model", bundle, "--num", "1", "--seed", "0", "--out", "scenes",
         "--device", "cpu", cwd=tmp_path)
    scene = tmp_path / "scenes" / "scene_000000"
    assert (scene / "scene.json").is_file() and (scene / "preview.png").is_file()
    _run(plain_env, "nfldm", "render", scene, "--model", bundle, "--rig", "front", "--trajectory", "straight",
         "--length", "1", "--speed", "10", "--rate", "10", "--out", "frames", "--device", "cpu", cwd=tmp_path)
    assert (tmp_path / "frames" / "frames.json").is_file()
    _run(plain_env, "nfldm", "export", scene, "--model", bundle, "--mesh", "mesh.ply", "--points", "points.ply",
         "--device", "cpu", cwd=tmp_path)
    assert (tmp_path / "mesh.ply").stat().st_size > 0 and (tmp_path / "points.ply").stat().st_size > 0
    _run(plain_env, "nfldm", "view", scene, "--model", bundle, "--screenshot", "scene.png", "--size", "160", "120",
         "--device", "cpu", cwd=tmp_path)
    _run(plain_env, "nfldm", "view", "cap.zarr", "--screenshot", "capture.png", "--size", "160", "120", cwd=tmp_path)
    assert (tmp_path / "scene.png").stat().st_size > 0 and (tmp_path / "capture.png").stat().st_size > 0
