"""Save and load networks as ``config.json`` + ``model.safetensors`` (never pickle).

Every trainable network of nfldm is an ``nn.Module`` built from one config dataclass. Mixing in
`PretrainedMixin` gives it

* ``save_pretrained(directory)`` — writes ``config.json`` (the config dataclass as JSON plus ``_class``, the
  dotted name of the network class, and ``_nfldm_version``) and ``model.safetensors`` (the state dict);
* ``from_pretrained(directory, device=None)`` — rebuilds the network from the config and loads the weights,
  checking every key and every shape first, so a wrong or stale folder fails with a message that names the
  folder and each missing, unexpected or mismatched tensor.

A network opts in with two class-level facts::

    @dataclass
    class MyConfig:
        channels: int = 8
        '''Feature channels.'''

    class MyNet(nn.Module, PretrainedMixin):
        config_class = MyConfig

        def __init__(self, config: MyConfig):
            super().__init__()
            self.config = config
            ...

JSON has no tuples, so on load every list is turned back into a tuple where the field's annotation says
``tuple`` (nested tuples and nested config dataclasses included); unknown config keys are an error rather than
silently dropped, because a config that does not round-trip is a model that does not either.

Class paths are recorded in saved files (``config.json``'s ``_class``, a bundle manifest's ``parts.*.class``), so a
class that moves keeps its old path loadable through `CLASS_PATH_ALIASES`: `import_class`, the ``_class`` check of
`PretrainedMixin.from_pretrained` and the bundle part check (`nfldm_sdk.models.bundle.load_part`) read an old path
as the class it now names (`names_class`).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nfldm_sdk.errors import NfldmError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

T = TypeVar("T", bound="PretrainedMixin")


def nfldm_version() -> str:
    """The installed nfldm distribution's version (``0.0.0+unknown`` when running from an uninstalled tree)."""
    try:
        return metadata.version("nfldm")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def class_path(cls: type) -> str:
    """Dotted import path of a class, e.g. ``nfldm_sdk.models.scene_ae.SceneAutoEncoder``."""
    return f"{cls.__module__}.{cls.__qualname__}"


#: Class paths that files written by earlier nfldm versions record -> the class path that names the same class now.
#: Every entry stays: a saved network or bundle is never re-written just because a class moved.
CLASS_PATH_ALIASES: dict[str, str] = {
    # the SDS prior network, in the flat `nfldm_sdk.guidance` module (bundles' optional prior/ part, prior runs)
    "nfldm_sdk.guidance.PriorUNet": "nfldm_sdk.models.prior_unet.PriorUNet",
    # the same network in the guidance subpackage's first layout
    "nfldm_sdk.guidance.guidance.PriorUNet": "nfldm_sdk.models.prior_unet.PriorUNet",
}


class UnknownClassError(NfldmError, ImportError):
    """A class path recorded in a saved file names no class of this nfldm (neither directly nor through
    `CLASS_PATH_ALIASES`)."""


def current_class_path(path: str) -> str:
    """The class path `path` stands for today: its `CLASS_PATH_ALIASES` entry, or `path` itself."""
    return CLASS_PATH_ALIASES.get(path, path)


def names_class(path: str | None, cls: type) -> bool:
    """Whether a recorded class path names `cls`: its `class_path`, or an alias of it (`CLASS_PATH_ALIASES`)."""
    return path is not None and current_class_path(path) == class_path(cls)


def import_class(path: str) -> type:
    """Inverse of `class_path`; an old path is read through `CLASS_PATH_ALIASES`.

    Raises:
        `UnknownClassError` (an ``ImportError``) naming the path when its module or class does not exist.
    """
    current = current_class_path(path)
    module, _, name = current.rpartition(".")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise UnknownClassError(f"cannot import {module!r} for class {path!r}: {e}") from e
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise UnknownClassError(f"class {path!r} does not exist in this nfldm ({nfldm_version()}): module "
                                    f"{module!r} has no {part!r}") from e
    return obj


class ModelFileError(NfldmError, ValueError):
    """A saved network's ``config.json`` or ``model.safetensors`` cannot be read (not JSON, truncated, foreign keys);
    the message names the file and the fix.

    Attributes:
        problem: the message without the fix (callers with a better fix, e.g. a bundle's, give their own).
    """

    def __init__(self, problem: str, fix: str = "restore it or save the model again with save_pretrained"):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


class ModelNotFoundError(NfldmError, FileNotFoundError):
    """A path given as a training run or a saved network holds neither; the message names what was expected."""


def read_config(path: str | Path) -> dict:
    """The JSON object in the JSON file at `path`: a network's ``config.json``, a bundle manifest, a ``scene.json``.

    Raises:
        FileNotFoundError: there is no file at `path`.
        `ModelFileError`: the file is not valid JSON or not a JSON object (the message names the file and the
            position of the error).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): the file was "
                             "edited or truncated") from e
    except UnicodeDecodeError as e:
        raise ModelFileError(f"{path} is not a text file ({e.reason})") from e
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def read_json_object(path: str | Path, *, missing: Exception,
                     broken: Callable[[ModelFileError], Exception]) -> dict:
    """`read_config` with the caller's errors: a manifest or a ``scene.json`` names its own fix.

    Args:
        path: the JSON file.
        missing: raised when there is no file at `path`.
        broken: builds the error raised (chained from it) for the `ModelFileError` of a file that is not a JSON
            object.
    """
    path = Path(path)
    if not path.is_file():
        raise missing
    try:
        return read_config(path)
    except ModelFileError as e:
        raise broken(e) from e


def resolve_model_dir(path: str | Path) -> Path:
    """The folder of a saved network given a training run directory (``RUN/model``) or the model folder itself.

    A model folder is one whose ``config.json`` carries the ``_class`` entry `PretrainedMixin.save_pretrained`
    writes; a run directory's own ``config.json`` (the resolved preset) has none, so ``RUN`` and ``RUN/model``
    both resolve to ``RUN/model``.

    Raises:
        `ModelNotFoundError` (a FileNotFoundError): neither `path` nor ``path/model`` holds a saved network.
        `ModelFileError`: a ``config.json`` on the way is not valid JSON.
    """
    path = Path(path)
    for candidate in (path, path / "model"):
        config = candidate / CONFIG_NAME
        if config.is_file() and "_class" in read_config(config):
            return candidate
    raise ModelNotFoundError(f"{path} holds no saved model: expected {path / 'model' / CONFIG_NAME} (a training run "
                            f"directory) or {path / CONFIG_NAME} with a '_class' entry (a model folder written by "
                            "save_pretrained); pass the --out folder of the training run")


# ------------------------------------------------------------------------------------------------ config <-> JSON
def config_to_dict(config: Any) -> dict:
    """A config dataclass as a JSON-ready dict (tuples become lists; nested dataclasses become dicts)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a config dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _coerce(value: Any, annotation: Any) -> Any:
    """Turn JSON `value` back into the type `annotation` names (lists -> tuples, dicts -> dataclasses)."""
    if value is None:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # Optional[X] / X | None: use the first arm that fits
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _coerce(value, arm)
            except (TypeError, ValueError):
                continue
        return value
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return config_from_dict(annotation, value)
    if (origin is tuple or annotation is tuple) and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args and len(args) == len(value):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        return tuple(value)
    if origin is list and isinstance(value, list):
        return [_coerce(v, args[0]) if args else v for v in value]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_from_dict(config_class: type, data: dict) -> Any:
    """Build `config_class` from a dict written by `config_to_dict`; unknown keys are an error.

    Keys starting with ``_`` (``_class``, ``_nfldm_version``) are metadata and ignored.
    """
    hints = typing.get_type_hints(config_class)
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(
            f"{config_class.__name__} has no field(s) {unknown}; known fields: {sorted(fields)}. "
            "The config was written by another version of nfldm: retrain or edit config.json.")
    return config_class(**{k: _coerce(v, hints[k]) for k, v in data.items()})


# ------------------------------------------------------------------------------------------------ the mixin
class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built from one config dataclass.

    The class must set ``config_class`` (the dataclass type) and keep its config as ``self.config``; its
    ``__init__`` must accept the config as its only required argument.
    """

    config_class: ClassVar[type]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into `directory` (created); returns the folder.

        Weights are saved from CPU copies as they are (dtype kept); tensors that share storage are cloned so
        safetensors accepts them.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = config_to_dict(self.config)  # type: ignore[attr-defined]
        config["_class"] = class_path(type(self))
        config["_nfldm_version"] = nfldm_version()
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.state_dict().items()}  # type: ignore[attr-defined]
        # Write weights first and the config last: a folder with a config.json is a complete folder.
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "nfldm_version": config["_nfldm_version"]})
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load_config(cls, directory: str | Path) -> Any:
        """The config dataclass stored in ``directory/config.json`` (checks that it belongs to this class)."""
        directory = Path(directory)
        path = directory / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {directory} is not a saved {cls.__name__} folder "
                f"(expected {CONFIG_NAME} + {WEIGHTS_NAME}, written by save_pretrained)")
        data = read_config(path)
        stored = data.get("_class")
        if stored is not None and not names_class(stored, cls):
            raise ValueError(
                f"{directory} holds a {stored}, not a {class_path(cls)}: load it with {stored.rpartition('.')[2]}.from_pretrained")
        try:
            return config_from_dict(cls.config_class, data)
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"{path}: {e}", "restore the file or save the model again with save_pretrained") from e

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path, device: str | torch.device | None = None) -> T:
        """Rebuild the network from ``directory/config.json`` and load ``model.safetensors`` into it.

        Every key and shape is checked before loading; any difference raises a ``ValueError`` that names the
        folder and lists the missing, unexpected and mismatched tensors; an unreadable ``config.json`` or
        ``model.safetensors`` (not JSON, truncated) raises `ModelFileError` naming the file. The model is returned
        in eval mode on `device` (CPU when None).
        """
        directory = Path(directory)
        config = cls.load_config(directory)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: the folder has a config but no weights; save it again with save_pretrained")
        model = cls(config)  # type: ignore[call-arg]
        try:
            state = load_file(str(weights), device="cpu")
        except SafetensorError as e:
            raise ModelFileError(f"{weights} is not a readable safetensors file ({e}): it is truncated or corrupted") from e
        expected = model.state_dict()  # type: ignore[attr-defined]
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                      for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
        if missing or unexpected or mismatched:
            lines = [f"weights in {weights} do not match {cls.__name__}({type(config).__name__} from {directory / CONFIG_NAME}):"]
            if missing:
                lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
            if unexpected:
                lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
            if mismatched:
                lines.append(f"  shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
            lines.append("  the folder's config and weights come from different models: save the model again with save_pretrained")
            raise ValueError("\n".join(lines))
        model.load_state_dict(state, strict=True)  # type: ignore[attr-defined]
        model.eval()  # type: ignore[attr-defined]
        return model.to(device) if device is not None else model  # type: ignore[attr-defined]


def load_pretrained(directory: str | Path, device: str | torch.device | None = None) -> Any:
    """Load whatever network ``directory`` holds, using the ``_class`` entry of its ``config.json``."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a folder written by save_pretrained")
    stored = read_config(path).get("_class")
    if not stored:
        raise ValueError(f"{path} has no '_class' entry: load it with the network class's from_pretrained")
    cls = import_class(stored)
    if not (isinstance(cls, type) and issubclass(cls, PretrainedMixin)):
        raise TypeError(f"{stored} (from {path}) is not a PretrainedMixin network")
    return cls.from_pretrained(directory, device=device)
