"""What a run is built from: its names checked, K, the method, the optimiser, the speed
switches and the plan that fits train.min_steps to the fit set."""

from __future__ import annotations

import copy
import random
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from deepclust.config import RunConfig, params_from_dict
from deepclust.data.store import ImageSet
from deepclust.data.views import EvalTransform, with_eval_resize
from deepclust.encoders import build_encoder
from deepclust.encoders.base import Encoder, set_normalisation
from deepclust.engine.schedule import plan_steps
from deepclust.errors import ConfigError, option
from deepclust.methods import METHODS, Method
from deepclust.methods.base import AuxiliaryStream

# augment_on "auto" keeps the fit set on the GPU when it takes at most this share of its memory.
DEVICE_DATA_FRACTION = 0.25
MIN_NEIGHBOURS = 5  # planned_config never scales encoder.neighbours below this


def check_names(cfg: RunConfig) -> None:
    """Raise a clear error for an unknown method, dataset, encoder or method parameter."""
    from deepclust.data.datasets import dataset_info
    from deepclust.encoders import check_encoder_name

    params_from_dict(METHODS.get(cfg.method).Params, cfg.params)
    dataset_info(cfg.dataset)
    check_encoder_name(cfg.encoder.name)


def resolve_num_clusters(cfg: RunConfig, fit_set: ImageSet, eval_set: ImageSet) -> int:
    k = cfg.clusters
    if k is None:
        labelled = eval_set if eval_set.has_labels else fit_set
        if not labelled.has_labels:
            raise ConfigError(
                "these images have no labels, so the number of clusters is unknown: pass "
                f"{option('clusters', 'K')}."
            )
        k = labelled.num_classes
    if k < 2:
        raise ConfigError(f"{option('clusters')} must be at least 2; got {k}.")
    if k > len(fit_set):
        raise ConfigError(
            f"{option('clusters', k)} is larger than the number of training images ({len(fit_set)}): "
            "use fewer clusters or more images."
        )
    return k


def planned_config(cfg: RunConfig, num_samples: int, num_clusters: int) -> RunConfig:
    """cfg fitted to this fit set: batch size and epochs of plan_steps (train.min_steps), and
    at most encoder.neighbours_share of the expected cluster size N/K as neighbours."""
    t, e = cfg.train, cfg.encoder
    batch, epochs = plan_steps(num_samples, t.batch_size, t.epochs, t.min_steps)
    neighbours = e.neighbours
    if e.neighbours_share > 0 and neighbours > 0:
        share = round(e.neighbours_share * num_samples / num_clusters)
        neighbours = min(neighbours, max(MIN_NEIGHBOURS, share))
    if (batch, epochs, neighbours) == (t.batch_size, t.epochs, e.neighbours):
        return cfg
    planned = copy.deepcopy(cfg)
    planned.train.batch_size, planned.train.epochs = batch, epochs
    planned.encoder.neighbours = neighbours
    return planned


def build_method(cfg: RunConfig, num_clusters: int, image_size: int, num_samples: int) -> Method:
    method_cls = METHODS.get(cfg.method)
    params = params_from_dict(method_cls.Params, cfg.params)
    e = cfg.encoder
    encoder = build_encoder(e.name, image_size, e.stem, e.weights, e.input_size)
    set_normalisation(encoder, e.mean, e.std)
    return method_cls(params, encoder, num_clusters, num_samples)


def evaluation_transform(
    cfg: RunConfig, method: Method, image_size: int | None = None
) -> EvalTransform:
    """How evaluation images reach the encoder: its own preprocessing, then the config's crop.

    image_size: the stored side, to check the crop against (None: a run already checked).
    """
    base = with_eval_resize(
        method.encoder.eval_transform(), cfg.data.eval_resize, method.encoder.trainable
    )
    crop = cfg.data.eval_center_crop
    if crop is None:
        return base
    if not method.encoder.trainable:
        raise ConfigError(
            "data.eval_center_crop applies to trained encoders; a frozen encoder evaluates on "
            "its own preprocessing (encoder.input_size). Remove data.eval_center_crop."
        )
    if crop < 1 or (image_size is not None and crop > image_size):
        raise ConfigError(
            f"data.eval_center_crop={crop} must be between 1 and the stored image size "
            f"{image_size}; store larger images with data.image_size."
        )
    return replace(base, center_crop=crop)


def build_optimizer(
    groups: list[dict[str, Any]], cfg: RunConfig, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """The configured optimiser; on CUDA its fused kernel (one launch for all parameters)."""
    opt = cfg.train.optimizer
    for g in groups:
        g["lr"] = opt.lr * g.pop("lr_scale", 1.0)
        g["initial_lr"] = g["lr"]
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=opt.lr,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov,
            **fused,
        )
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay, **fused)


def data_on_device(cfg: RunConfig, device: torch.device, images: torch.Tensor) -> bool:
    """Whether the fit set's uint8 images live on the device and views are made there."""
    if cfg.data.augment_on != "auto":
        return cfg.data.augment_on == "device"
    if device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    return images.numel() * images.element_size() <= DEVICE_DATA_FRACTION * total


def apply_speed_settings(method: Method, cfg: RunConfig, device: torch.device) -> bool:
    """channels_last and torch.compile for the method's trainable encoders, as configured.

    Encoders = every Encoder module of the method (an EMA target copy included). Returns
    whether the views should be channels_last. Parameters keep their names, so checkpoints
    are the same with and without these switches.
    """
    encoders = [m for m in method.modules() if isinstance(m, Encoder) and m.trainable]
    convolutional = any(isinstance(m, torch.nn.Conv2d) for e in encoders for m in e.modules())
    # None = on CUDA only. On the CPU it measured 1.1-1.5x faster too, but oneDNN's NHWC
    # kernels round differently at different batch sizes, so 2 processes would no longer
    # reproduce 1 to test_ddp's tolerance: opt in with train.channels_last=true.
    channels_last = cfg.train.channels_last
    if channels_last is None:
        channels_last = device.type == "cuda"
    channels_last = channels_last and convolutional
    if channels_last:
        method.to(memory_format=torch.channels_last)  # 4-D weights only
    if cfg.train.compile:
        for encoder in encoders:
            encoder.compile()  # in place: the state dict keeps its keys
    return channels_last


def match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimiser state its parameter's memory format (channels_last or not).

    Fused and foreach optimisers walk a parameter and its state as flat memory, so a run
    resumed with another train.channels_last needs its moments re-laid out.
    """
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if (
                isinstance(value, torch.Tensor)
                and value.shape == param.shape
                and value.stride() != param.stride()
            ):
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def check_auxiliary_stream(stream: AuxiliaryStream, method: str, world_size: int) -> None:
    """Raise ConfigError when a method's auxiliary batches cannot be drawn."""
    if stream.batch_size < 1 or stream.batch_size % world_size:
        raise ConfigError(
            f"{method}'s auxiliary batch size {stream.batch_size} must be a positive multiple of "
            f"the {world_size} processes."
        )
    if len(stream.rows) < stream.batch_size:
        raise ConfigError(
            f"{method}'s auxiliary batches need {stream.batch_size} images but only "
            f"{len(stream.rows)} qualify: lower its auxiliary batch size."
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
