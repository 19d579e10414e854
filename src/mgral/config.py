"""Run configuration: frozen dataclasses per component, presets, YAML files and dotted overrides.

A run directory stores the resolved config (``config.yaml``); everything a run does follows from it and
the seeds in it. Build one with :func:`load_config`::

    cfg = load_config(preset="smoke", overrides=["loop.cycles=3", "train.lr=0.005"])
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mgral.errors import InputError


@dataclass(frozen=True)
class SyntheticDataConfig:
    generator: str = "shapes"  # shapes | digits
    difficulty: str = "easy"  # easy | hard (see mgral.data.synthetic.DIFFICULTIES)
    n_train: int = 600  # images in the pool
    n_test: int = 200  # images in the test split
    seed: int = 0  # generation seed (the test split uses a stream derived from it)
    options: dict[str, Any] = field(default_factory=dict)  # overrides of SyntheticSpec knobs


@dataclass(frozen=True)
class DataConfig:
    kind: str = "synthetic"  # synthetic | files | voc0712 | coco2017
    root: str | None = None  # voc0712: the VOCdevkit folder; coco2017: the folder with annotations/
    train: str | None = None  # files: the pool (COCO json, VOC folder or YOLO folder)
    train_format: str = "auto"
    train_split: str | None = None  # VOC split of the pool, e.g. trainval
    test: str | None = None  # files: the test split
    test_format: str = "auto"
    test_split: str | None = None
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    allow_outside_paths: bool = False  # annotation files may name images outside their dataset folder


@dataclass(frozen=True)
class DetectorConfig:
    name: str = (
        "tiny_ssd"  # a registered model: tiny_ssd, tiny_retinanet, ssd300_vgg16, retinanet_resnet50_fpn
    )
    image_size: int = 96  # input side for the tiny models (ssd300 is always 300)
    width: int = 32  # base channel width of the tiny backbones
    pretrained: str = "none"  # none | backbone (ImageNet backbone via torchvision's weights API)
    score_thresh: float | None = None  # None keeps the model's default (SSD 0.01, RetinaNet 0.05)
    detections_per_img: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 0  # total iterations; 0 derives them from epochs
    epochs: float = 0.0  # used when iterations == 0: ceil(epochs * n_labeled / batch_size)
    batch_size: int = 16
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: tuple[float, ...] = (0.8,)  # fractions of the iterations where lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    warmup_iters: int = 0  # linear warm-up from lr / 10
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    augment: str = "flip"  # none | flip | ssd (photometric + zoom-out + IoU crop + flip)
    num_workers: int = 0  # data-loading processes
    amp: bool = False  # bf16 autocast on CUDA
    checkpoint_every: int = 0  # save a resumable training state every N iterations; 0 = never mid-training
    eval_batch_size: int = 32


@dataclass(frozen=True)
class SemiConfig:
    """Semi-supervised training (ISD for SSD-style, SED for RetinaNet-style detectors)."""

    method: str = "auto"  # auto (isd for softmax/SSD models, sed for sigmoid/RetinaNet models) | isd | sed
    unlabeled_batch: int = 8  # unlabeled images per iteration (even, for ISD's pairs)
    weight: float = 1.0  # weight of the unsupervised loss (times the ramp)
    rampup: float = 0.27  # fraction of iterations of the Gaussian ramp-up (ISD: 32k of 120k)
    rampdown: float = 0.17  # fraction of iterations of the ramp-down at the end (ISD: 20k of 120k)
    isd_beta: float = 100.0  # mixing coefficient ~ Beta(isd_beta, isd_beta) (ISD's default)
    isd_type1: float = 0.1  # weight of ISD's type-I loss (both sources foreground)
    ema_decay: float = 0.99  # SED: teacher = EMA of the student (the coco-retinanet preset: 0.9996)
    sed_scale: float = 0.5  # SED: the student's rescaled view
    sed_gamma: float = 2.0  # SED: focal re-weighting exponent of the distillation loss
    sed_reg_thresh: float = 0.5  # SED: teacher score above which box regression is distilled


@dataclass(frozen=True)
class LoopConfig:
    strategies: tuple[str, ...] = ("random",)
    seeds: tuple[int, ...] = (0,)
    initial: float = 100  # initial labeled set: a count, or a fraction of the pool when < 1
    budget: float = 100  # images labeled per cycle: a count, or a fraction of the pool when < 1
    cycles: int = 3  # detectors trained and evaluated; labeled sizes initial + k * budget, k < cycles
    metric: str = "voc07"  # voc07 | voc | coco: the number reported as `map`
    warm_start: bool = False  # start each cycle's training from the previous cycle's weights
    keep_checkpoints: bool = True  # keep every cycle's model; false keeps only cycle 0 and the last one


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    progress: bool = True  # progress bars on stderr
    data: DataConfig = field(default_factory=DataConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    strategy_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-strategy keyword options


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "name": "smoke",
        "progress": False,
        "data": {"synthetic": {"generator": "shapes", "n_train": 120, "n_test": 40, "options": {"image_size": 64}}},
        "detector": {"name": "tiny_ssd", "image_size": 64, "width": 16},
        "train": {"iterations": 30, "batch_size": 8, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4,
                  "eval_batch_size": 40},
        "loop": {"strategies": ["random"], "seeds": [0], "initial": 20, "budget": 20, "cycles": 2},
    },
    "demo": {
        "name": "demo",
        "data": {"synthetic": {"generator": "shapes", "difficulty": "hard", "n_train": 1000, "n_test": 300}},
        "detector": {"name": "tiny_ssd", "image_size": 96, "width": 32},
        "train": {"iterations": 500, "batch_size": 16, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4,
                  "lr_steps": [0.75]},
        "loop": {"strategies": ["random", "entropy", "coreset", "mgral"], "seeds": [0], "initial": 100, "budget": 100,
                 "cycles": 4},
    },
    # the CPU benchmark: hard shapes as short videos (near-duplicate frames) with a long tail, where
    # strategies separate; every registered strategy, 3 seeds, 100 + 4 x 100 labeled images
    "cpu-bench": {
        "name": "cpu-bench",
        "progress": False,
        "data": {"synthetic": {"generator": "shapes", "difficulty": "redundant", "n_train": 1000, "n_test": 300}},
        "detector": {"name": "tiny_ssd", "image_size": 96, "width": 32},
        "train": {"iterations": 500, "batch_size": 16, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4,
                  "lr_steps": [0.75]},
        "loop": {"strategies": ["all"], "seeds": [0, 1, 2], "initial": 100, "budget": 100, "cycles": 5},
    },
    "voc-ssd300": {
        "name": "voc-ssd300",
        "data": {"kind": "voc0712"},
        "detector": {"name": "ssd300_vgg16", "pretrained": "backbone"},
        "train": {"epochs": 300, "batch_size": 32, "optimizer": "sgd", "lr": 1e-3, "momentum": 0.9,
                  "weight_decay": 5e-4, "lr_steps": [0.8], "warmup_iters": 500, "augment": "ssd",
                  "num_workers": 8, "amp": True, "checkpoint_every": 1000},
        "loop": {"strategies": ["all"], "seeds": [0, 1, 2], "initial": 1000, "budget": 1000, "cycles": 10,
                 "metric": "voc07"},
        "strategy_params": {"mgral": {"iterations": 2200, "table_size": 200, "clusters": 64}},
    },
    "coco-retinanet": {
        "name": "coco-retinanet",
        "data": {"kind": "coco2017"},
        "detector": {"name": "retinanet_resnet50_fpn", "pretrained": "backbone"},
        "train": {"iterations": 180000, "batch_size": 8, "optimizer": "sgd", "lr": 0.02, "momentum": 0.9,
                  "weight_decay": 1e-4, "lr_steps": [0.6667, 0.8889], "warmup_iters": 1000, "augment": "flip",
                  "grad_clip": 10.0, "num_workers": 8, "amp": True, "checkpoint_every": 2000},
        "loop": {"strategies": ["all"], "seeds": [0, 1, 2], "initial": 0.02, "budget": 0.02, "cycles": 5,
                 "metric": "coco"},
        "strategy_params": {"mgral": {"iterations": 800, "table_size": 30, "clusters": 64}},
        "semi": {"ema_decay": 0.9996},
    },
}  # fmt: skip


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Coerce a YAML value to the annotated type ``tp`` (dataclasses recursively)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(where, f"expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise InputError(where, f"expected one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        (elem, *_rest) = typing.get_args(tp)
        return tuple(_convert(elem, v, where) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise InputError(where, f"expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(tp) or (Any, Any)
        if key_type is str:
            for k in value:
                if not isinstance(k, str):
                    raise InputError(where, f"keys should be names, got {k!r}")
        return {k: _convert(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InputError(where, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(where, f"expected a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(where, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise InputError(where, f"expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InputError(where, f"expected text, got {value!r}")
        return str(value)
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise InputError(
            where,
            f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; known: {', '.join(sorted(names)) or 'none'}",
        )
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where != "config" else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(where, str(exc)) from None


def from_mapping(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """Build the dataclass ``cls`` from a plain mapping with the config's checks: unknown keys, types,
    literals, and ``__post_init__`` range checks all become an :class:`InputError` naming ``where``."""
    if data is not None and not isinstance(data, dict):
        raise InputError(where, f"expected a mapping, got {data!r}")
    return _from_dict(cls, dict(data or {}), where)


def to_dict(cfg: Any) -> Any:
    """A plain (YAML-safe) dict of a config dataclass."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("options",):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise InputError("--set", f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # not YAML: the text itself
        value = raw
    return key.strip().split("."), value


def load_config(
    preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Resolve a config from a preset or a YAML file, then apply ``key.sub=value`` overrides."""
    if preset and file:
        raise InputError("--preset/--config", "give one of them, not both")
    data: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise InputError("--preset", f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
        # a copy: the overrides below must not edit the preset itself
        data = _merge(to_dict(RunConfig()), copy.deepcopy(PRESETS[preset]))
    elif file:
        from mgral.utils import parse_yaml, read_text

        path = Path(file)
        loaded = parse_yaml(read_text(path), path)
        if not isinstance(loaded, dict):
            raise InputError(path, "top level should be a mapping")
        data = _merge(to_dict(RunConfig()), loaded)
    else:
        data = to_dict(RunConfig())
    for text in overrides or []:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                if k in node or node is data or keys[0] != "strategy_params":
                    raise InputError("--set", f"unknown key {'.'.join(keys)!r}")
                node[k] = {}
            node = node[k]
        if keys[0] != "strategy_params" and not (keys[-1] in node or "options" in keys):
            raise InputError("--set", f"unknown key {'.'.join(keys)!r}")
        node[keys[-1]] = value
    cfg = _from_dict(RunConfig, data)
    validate_config(cfg)
    return cfg


def validate_config(cfg: RunConfig) -> None:
    """Cross-field checks with messages that name the key."""
    loop, train, data = cfg.loop, cfg.train, cfg.data
    if loop.cycles < 1:
        raise InputError("loop.cycles", f"need at least 1, got {loop.cycles}")
    for key, v in (("loop.initial", loop.initial), ("loop.budget", loop.budget)):
        if v <= 0 or (v >= 1 and not float(v).is_integer()):
            raise InputError(key, f"need a positive whole number or a fraction in (0, 1), got {v}")
    if not loop.seeds:
        raise InputError("loop.seeds", "need at least one seed")
    if loop.metric not in ("voc07", "voc", "coco"):
        raise InputError("loop.metric", f"expected voc07, voc or coco, got {loop.metric!r}")
    if train.iterations <= 0 and train.epochs <= 0:
        raise InputError("train", "set train.iterations or train.epochs")
    if train.optimizer not in ("sgd", "adamw"):
        raise InputError("train.optimizer", f"expected sgd or adamw, got {train.optimizer!r}")
    if train.augment not in ("none", "flip", "ssd"):
        raise InputError("train.augment", f"expected none, flip or ssd, got {train.augment!r}")
    if data.kind not in ("synthetic", "files", "voc0712", "coco2017"):
        raise InputError("data.kind", f"expected synthetic, files, voc0712 or coco2017, got {data.kind!r}")
    if data.kind in ("voc0712", "coco2017") and not data.root:
        raise InputError("data.root", f"the {data.kind} data needs data.root (e.g. --set data.root=/path)")
    if data.kind == "files" and not (data.train and data.test):
        raise InputError("data", "kind 'files' needs data.train and data.test")
    if cfg.semi.method not in ("auto", "isd", "sed"):
        raise InputError("semi.method", f"expected auto, isd or sed, got {cfg.semi.method!r}")
    if cfg.semi.unlabeled_batch < 2 or cfg.semi.unlabeled_batch % 2:
        raise InputError("semi.unlabeled_batch", f"need an even number >= 2, got {cfg.semi.unlabeled_batch}")
    if cfg.detector.pretrained not in ("none", "backbone"):
        raise InputError("detector.pretrained", f"expected none or backbone, got {cfg.detector.pretrained!r}")


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from mgral.utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_from_yaml_text(text: str, source: str) -> RunConfig:
    from mgral.utils import parse_yaml

    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise InputError(source, "top level should be a mapping")
    return _from_dict(RunConfig, data)
