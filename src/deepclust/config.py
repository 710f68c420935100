"""Typed run configuration: dataclasses loaded from YAML, overridable with dotted keys.

Unknown keys and wrong types are rejected with a message naming the key and the valid
options, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from deepclust.errors import ConfigError, unknown_name

CONFIG_ROOT = Path(__file__).parent / "configs"

# Images of more pixels are skipped, from their header, before any decoding (a 360 KB 16-bit
# PNG of 13,000 x 13,000 px took 7.45 GB to decode). The default is PIL's own warning bound,
# above every phone and most camera photos (50 MP); `--max-pixels N` (any command) raises it.
MAX_PIXELS_ENV = "DEEPCLUST_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485


def max_pixels() -> int:
    """The pixel cap per image: $DEEPCLUST_MAX_PIXELS (set by --max-pixels) or the default."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"--max-pixels ({MAX_PIXELS_ENV}) must be a positive whole number of pixels, got "
            f"'{text}'; the default is {DEFAULT_MAX_PIXELS:,}."
        )
    return value


@dataclass
class DataConfig:
    data_dir: str | None = None
    protocol: Literal["train-test", "all"] = "train-test"
    image_size: int | None = None  # stored resolution; None = the dataset's default
    include_unlabeled: bool = False  # STL-10: add the unlabeled split to the fit set
    # the labelled splits protocol "all" joins; [train]: the train split alone (DigPro's
    # authors on ImageNet-10 / Dogs / Tiny-ImageNet)
    all_splits: tuple[str, ...] = ("train", "test")
    bad_images: Literal["skip", "fail"] = "skip"
    download: bool = False
    num_workers: int = 0  # DataLoader workers for the CPU view path
    # device: the fit set lives on the GPU as uint8 and views are made there; auto: device on
    # CUDA when the images take at most a quarter of the GPU's memory, loader otherwise
    augment_on: Literal["auto", "loader", "device"] = "auto"
    # evaluate trained encoders on the centre crop of this side of each stored image (ConCURL
    # on ImageNet subsets: stored at 256 px, evaluated on the centre 160 px); None = whole image
    eval_center_crop: int | None = None
    # evaluate trained encoders on each stored image resized to this side (shorter side, then
    # centre crop): DigPro stores larger images for its crops and scores at the crop size
    eval_resize: int | None = None


@dataclass
class EncoderConfig:
    name: str = "resnet18"  # a registered name, or timm:<model> / open_clip:<model> / hf:<model>
    stem: Literal["auto", "cifar", "cifar_maxpool", "imagenet"] = "auto"
    weights: str | None = None  # pretrained encoders: local file/folder, hub tag, or "random"
    input_size: int | None = (
        None  # pretrained encoders: resize images to this (default: the model's)
    )
    # Frozen encoders train the heads on cached features (see engine/frozen.py):
    augmented_copies: int = 0  # augmented feature copies of the fit set to draw views from
    neighbours: int = (
        0  # > 0: a view may be the feature of one of the k nearest neighbours (TEMI/SCAN style)
    )
    centre_neighbours: bool = True  # neighbours by cosine of mean-subtracted features
    # > 0: at most this share of the expected cluster size N/K as neighbours (never under 5),
    # so that a small collection's neighbours stay inside its clusters
    neighbours_share: float = 0.0
    feature_noise: float = 0.1  # Gaussian noise on feature views, in units of each dimension's std
    tta_flip: bool = False  # average clean features with those of the mirrored image
    # input normalisation of an encoder trained from scratch; None = ImageNet's (IMC-SwAV's
    # authors normalise CIFAR and STL-10 with those datasets' own statistics)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 5e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    nesterov: bool = False


@dataclass
class ScheduleConfig:
    name: Literal["constant", "multistep", "cosine"] = "constant"
    warmup_iters: int = 0  # linear warm-up, in iterations (added to warmup_epochs)
    warmup_epochs: int = 0
    # + this fraction of the run's optimiser steps: warm-up that scales with the data (the
    # frozen recipes); the paper configs keep their absolute warmup_iters / warmup_epochs
    warmup_fraction: float = 0.0
    milestones: tuple[int, ...] = ()  # epochs, for multistep
    gamma: float = 0.1
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of the base lr
    # cosine progress: over the steps after warm-up (0 -> 1), or as ProPos / DigPro's code,
    # (step + 1 - warm-up steps) / all steps (it ends above the floor)
    cosine_progress: Literal["after_warmup", "total"] = "after_warmup"


@dataclass
class TrainConfig:
    epochs: int = 0
    batch_size: int = 256
    eval_batch_size: int = 512
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    grad_clip: float | None = None
    eval_every: int = 1  # epochs; 0 = only at the end
    checkpoint_every: int = 1  # epochs
    max_steps_per_epoch: int | None = None  # cap for quick runs and benchmarks
    # > 0: at least this many optimiser steps. A small fit set gets smaller batches (at least
    # 8 an epoch, none under 32 images) and more epochs; see engine/schedule.plan_steps
    min_steps: int = 0
    progress: bool = True
    sync_batchnorm: bool = True  # under torchrun: BatchNorm statistics over the global batch
    # Speed switches (see README "Speed"); none changes what is computed, only how fast.
    channels_last: bool | None = None  # conv encoders in NHWC; None = on CUDA only
    compile: bool = False  # torch.compile the encoder (first steps slower while it compiles)
    cpu_threads: int = 0  # torch intra-op threads on the CPU; 0 = torch's default (the cores)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class SelfLabelConfig:
    """SCAN's self-labelling stage after training, on a frozen encoder's features
    (training/self_label.py): the heads learn the confident weak-view clusters from a strong
    feature-space view. epochs 0 = off."""

    epochs: int = 0
    threshold: float = 0.99  # confidence above which a weak-view prediction is a label
    balance: bool = True  # weigh classes by 1 / their share of the confident samples
    batch_size: int = 1000  # SCAN's
    # Adam. SCAN: 1e-4 for 200 epochs of a whole network; heads on cached features get
    # a tenth of the steps at ten times the rate (chosen for time, not by accuracy)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # the strong view: Gaussian noise (units of each dimension's std), dropout of feature
    # dimensions, and mixing with a random other sample by a weight drawn up to `mix`
    noise: float = 0.3
    dropout: float = 0.3
    mix: float = 0.3


@dataclass
class RunConfig:
    method: str = "kmeans"
    dataset: str = "digits"
    clusters: int | None = None  # K; None = the dataset's number of classes
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    self_label: SelfLabelConfig = field(default_factory=SelfLabelConfig)
    params: dict[str, Any] = field(default_factory=dict)  # the method's own settings, typed by it

    def __post_init__(self) -> None:
        check_ranges(self)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


# Allowed range of every numeric config value: (dotted key, lowest, highest, lowest excluded).
# None as a value (where the type allows it) means "off" or "the default" and is not checked.
RANGES: tuple[tuple[str, float | None, float | None, bool], ...] = (
    ("clusters", 2, None, False),
    ("data.image_size", 1, None, False),
    ("data.num_workers", 0, None, False),
    ("data.eval_center_crop", 1, None, False),
    ("data.eval_resize", 1, None, False),
    ("encoder.input_size", 1, None, False),
    ("encoder.augmented_copies", 0, None, False),
    ("encoder.neighbours", 0, None, False),
    ("encoder.feature_noise", 0, None, False),
    ("encoder.neighbours_share", 0, None, False),
    ("encoder.mean", 0, 1, False),
    ("encoder.std", 0, None, True),
    ("train.epochs", 0, None, False),
    ("train.batch_size", 1, None, False),
    ("train.eval_batch_size", 1, None, False),
    ("train.seed", 0, 2**63 - 1, False),
    ("train.grad_clip", 0, None, False),
    ("train.eval_every", 0, None, False),
    ("train.checkpoint_every", 1, None, False),
    ("train.max_steps_per_epoch", 1, None, False),
    ("train.cpu_threads", 0, None, False),
    ("train.min_steps", 0, None, False),
    ("train.optimizer.lr", 0, None, True),
    ("train.optimizer.weight_decay", 0, None, False),
    ("train.optimizer.momentum", 0, 1, False),
    ("train.optimizer.betas", 0, 1, False),
    ("train.schedule.warmup_iters", 0, None, False),
    ("train.schedule.warmup_epochs", 0, None, False),
    ("train.schedule.warmup_fraction", 0, 1, False),
    ("train.schedule.milestones", 0, None, False),
    ("train.schedule.gamma", 0, None, True),
    ("train.schedule.min_lr_ratio", 0, 1, False),
    ("self_label.epochs", 0, None, False),
    ("self_label.threshold", 0, 1, False),
    ("self_label.batch_size", 1, None, False),
    ("self_label.lr", 0, None, True),
    ("self_label.weight_decay", 0, None, False),
    ("self_label.noise", 0, None, False),
    ("self_label.dropout", 0, 1, False),
    ("self_label.mix", 0, 1, False),
)


def _range_text(low: float | None, high: float | None, open_low: bool) -> str:
    if high is not None:
        return f"between {low} and {high}"
    return f"{'greater than' if open_low else 'at least'} {low}"


def check_ranges(cfg: RunConfig) -> None:
    """Raise ConfigError naming the key, the value and its range for any value out of range."""
    for key, low, high, open_low in RANGES:
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        items = value if isinstance(value, tuple | list) else (value,)
        for item in items:
            if item is None:
                continue
            bad = not math.isfinite(item) or (
                low is not None and (item <= low if open_low else item < low)
            )
            if bad or (high is not None and item > high):
                raise ConfigError(
                    f"'{key}' must be {_range_text(low, high, open_low)}; got {value!r}."
                )


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists: what YAML and weights_only checkpoints hold."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"'{key}': invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"'{key}' must be one of {', '.join(map(str, args))}; got {value!r}.")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(
                f"'{key}' must be a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}."
            )
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"'{key}' needs {len(args)} values; got {list(value)!r}.")
        item_types = (
            [args[0]] * len(value) if (origin is list or args[-1:] == (Ellipsis,)) else list(args)
        )
        items = [
            _coerce(v, t, f"{key}[{i}]")
            for i, (v, t) in enumerate(zip(value, item_types, strict=True))
        ]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping; got {value!r}.")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' must be true or false; got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"'{key}' must be an integer; got {value!r}.")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 5e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{key}' must be a number; got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{key}' must be a string; got {value!r}.")
    raise TypeError(f"unsupported config type {tp} for '{key}'")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys and bad types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(
                unknown_name("config key", f"{prefix}{key}", [f"{prefix}{n}" for n in names])
            )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """tree['a']['b'] = value for dotted 'a.b' (creating mappings on the way)."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"'{dotted}': '{part}' is a value, not a section.")
        node = nxt
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """['train.lr=0.1', ...] -> [('train.lr', 0.1)], values parsed as YAML scalars."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. train.epochs=10); got '{item}'.")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return out


def packaged_configs() -> list[tuple[str, str, str]]:
    """(method, config name, the file's first comment line) for every packaged config."""
    out = []
    for path in sorted(CONFIG_ROOT.glob("*/*.yaml")):
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        out.append((path.parent.name, path.stem, first.lstrip("# ").strip()))
    return out


def default_config_file(method: str, dataset: str) -> Path | None:
    """configs/<method>/<dataset>.yaml, else configs/<method>/default.yaml, else None."""
    for name in (dataset, "default"):
        path = CONFIG_ROOT / method / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def resolve_config_file(name: str | Path, method: str | None) -> Path:
    """A path to a YAML file, or the name of a packaged config of the method (e.g. 'cpu')."""
    path = Path(name)
    if path.is_file() or method is None:
        return path
    packaged = CONFIG_ROOT / method / f"{name}.yaml"
    if packaged.is_file():
        return packaged
    names = sorted(p.stem for p in (CONFIG_ROOT / method).glob("*.yaml"))
    raise ConfigError(
        f"config '{name}' is neither a file nor a packaged config of method '{method}' "
        f"(packaged: {', '.join(names) or 'none'})."
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level.")
    return data


def build_config(
    method: str | None = None,
    dataset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[tuple[str, Any]] | None = None,
) -> RunConfig:
    """Resolve a run config: defaults < configs/<method>/<dataset>.yaml < FILE < overrides.

    config_file is a YAML path or a packaged config name of the method (configs/<method>/<name>.yaml).
    method/dataset given explicitly win over the file's; overrides use dotted keys.
    """
    tree: dict[str, Any] = {}
    if config_file is not None:
        config_file = resolve_config_file(config_file, method)
        file_tree = read_yaml(config_file)
        method = method or file_tree.get("method")
        dataset = dataset or file_tree.get("dataset")
    method = method or RunConfig.method
    dataset = dataset or RunConfig.dataset
    packaged = default_config_file(method, dataset)
    if packaged is not None:
        _merge(tree, read_yaml(packaged))
    if config_file is not None:
        _merge(tree, file_tree)
    tree["method"], tree["dataset"] = method, dataset
    for key, value in overrides or []:
        set_dotted(tree, key, value)
    return from_dict(RunConfig, tree)


def _merge(base: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def params_from_dict(params_cls: type, data: dict[str, Any]) -> Any:
    """A method's typed params from the config's `params` section."""
    return from_dict(params_cls, data, prefix="params.")
