"""The one training loop every method runs through.

It knows nothing of any method: it builds data, encoder and method from the config, asks
the method for views and losses, steps the optimiser on the schedule, runs the method's
hooks, evaluates, logs JSON lines and writes atomic checkpoints. Randomness is keyed by
(seed, epoch, batch), so a run resumed from a checkpoint ends where an uninterrupted one does.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from deepclust.config import RunConfig, params_from_dict
from deepclust.data.datasets import load_protocol
from deepclust.data.store import ImageSet
from deepclust.data.views import EvalTransform, ViewGenerator, batch_generator, with_eval_resize
from deepclust.encoders import build_encoder
from deepclust.encoders.base import Encoder, set_normalisation
from deepclust.engine import checkpoint as ckpt
from deepclust.engine.batchnorm import convert_to_global_batchnorm
from deepclust.engine.context import FitContext, run_batched
from deepclust.engine.distributed import DistInfo, all_reduce_sum, barrier, init_from_env
from deepclust.engine.fingerprint import check_resume_epochs, check_same_data, data_fingerprint
from deepclust.engine.frozen import EpochFeatureViews, FrozenFeatures
from deepclust.engine.machine import cpu_model
from deepclust.engine.runfolder import RunFolder, log_size, truncate_log, write_config
from deepclust.engine.sampler import epoch_batches, num_batches, stream_batches
from deepclust.engine.schedule import lr_factor, plan_steps, warmup_steps
from deepclust.engine.transfer import to_device
from deepclust.errors import CheckpointError, ConfigError, DataError, DeepclustError
from deepclust.evaluation.health import Schedule, prediction_warnings, schedule_warnings
from deepclust.evaluation.metrics import score
from deepclust.evaluation.predictions import prediction_rows, write_predictions_csv
from deepclust.methods import METHODS, Method, StepInfo
from deepclust.methods.base import AuxiliaryStream

# Keys that may change when a run is resumed; anything else must match the checkpoint.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.device",
    "train.progress",
    "train.eval_batch_size",
    "data.num_workers",
    "data.augment_on",
    "data.data_dir",
    "train.channels_last",
    "train.compile",
    "train.cpu_threads",
)

# augment_on "auto" keeps the fit set on the GPU when it takes at most this share of its memory.
DEVICE_DATA_FRACTION = 0.25
# Steps between progress-bar updates (read from the device without waiting for it).
PROGRESS_EVERY = 20


# DDP must not overwrite buffers from rank 0 at every forward (the argument was renamed).
NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers"
    in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DeepclustError(
            "--device cuda was asked for, but no CUDA GPU is usable here (torch.cuda.is_available() is False). "
            "Use --device cpu, or --device auto to take a GPU only when there is one."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    if cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def resolve_num_clusters(cfg: RunConfig, fit_set: ImageSet, eval_set: ImageSet) -> int:
    k = cfg.clusters
    if k is None:
        labelled = eval_set if eval_set.has_labels else fit_set
        if not labelled.has_labels:
            raise ConfigError(
                "these images have no labels, so the number of clusters is unknown: pass --clusters K."
            )
        k = labelled.num_classes
    if k < 2:
        raise ConfigError(f"--clusters must be at least 2; got {k}.")
    if k > len(fit_set):
        raise ConfigError(
            f"--clusters {k} is larger than the number of training images ({len(fit_set)}): "
            "use fewer clusters or more images."
        )
    return k


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


def check_names(cfg: RunConfig) -> None:
    """Raise a clear error for an unknown method, dataset, encoder or method parameter."""
    from deepclust.data.datasets import dataset_info
    from deepclust.encoders import check_encoder_name

    params_from_dict(METHODS.get(cfg.method).Params, cfg.params)
    dataset_info(cfg.dataset)
    check_encoder_name(cfg.encoder.name)


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


def optimisation_step(
    method: Method,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    views: list[torch.Tensor],
    info: StepInfo,
    amp: torch.dtype | None = None,
    grad_clip: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training step: forward through `model` (the method, or its DDP wrapper), summed
    losses, backward, the method's hooks around the optimiser step -> (loss, named losses),
    still on the device."""
    device_type = views[0].device.type
    with torch.autocast(device_type, dtype=amp, enabled=amp is not None):
        losses = model(views, info)
    loss = torch.stack([v.float() for v in losses.values()]).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    method.before_optimizer_step(info)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
    optimizer.step()
    method.after_optimizer_step(info)
    return loss, losses


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


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config trees."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "params":
            diffs += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}")
    return diffs


MIN_NEIGHBOURS = 5  # planned_config never scales encoder.neighbours below this


def health_warnings(
    method: Method, schedule: dict[str, int], steps_per_epoch: int, probs: torch.Tensor
) -> list[str]:
    """The run-health warnings of a finished run (evaluation/health.py)."""
    total = schedule["steps"]
    phases = method.learning_phases(total, steps_per_epoch) if total else {}
    plan = Schedule(total, schedule["warmup_steps"], phases)
    return schedule_warnings(plan) + prediction_warnings(probs.numpy(), trained=total > 0)


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochViews(torch.utils.data.Dataset):
    """Batch i of an epoch -> (views, fit-set indices), randomness keyed by (seed, epoch, i).

    This process's samples are `offset`.. of a global batch of `global_batch`: the views of
    a sample are the same however the global batch is split over processes.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batches: list[torch.Tensor],
        views: ViewGenerator,
        seed: int,
        epoch: int,
        offset: int,
        global_batch: int,
        stream: str = "views",
    ) -> None:
        self.images, self.batches, self.views = images, batches, views
        self.seed, self.epoch, self.offset, self.global_batch = seed, epoch, offset, global_batch
        self.stream = stream

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        idx = to_device(self.batches[i], self.images.device)
        gen = batch_generator(self.seed, self.epoch, i, stream=self.stream)
        return self.views(self.images[idx], gen, self.offset, self.global_batch), idx


class StepBatches(torch.utils.data.Dataset):
    """Step i -> (views, fit-set indices, auxiliary views or None): the epoch's batches, each
    paired with the same step of the method's auxiliary stream when it has one."""

    def __init__(
        self,
        main: torch.utils.data.Dataset,
        auxiliary: torch.utils.data.Dataset | None = None,
    ) -> None:
        self.main, self.auxiliary = main, auxiliary

    def __len__(self) -> int:
        return len(self.main)  # type: ignore[arg-type]

    def __getitem__(
        self, i: int
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor] | None]:
        views, idx = self.main[i]
        return views, idx, self.auxiliary[i][0] if self.auxiliary is not None else None


class RunningMeans:
    """Per-step losses summed on the device; the host reads them without waiting for it.

    read() starts a copy of the current means to the host and returns the last copy that
    has arrived (on the CPU: the current means), so a progress bar never stalls the GPU.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self._pending: tuple[list[str], torch.Tensor, torch.cuda.Event] | None = None
        self._shown: dict[str, float] | None = None

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps += 1

    def read(self) -> dict[str, float] | None:
        if not self.sums:
            return self._shown
        names = list(self.sums)
        means = torch.stack([self.sums[n] for n in names]) / self.steps
        if self.device.type != "cuda":
            return dict(zip(names, means.tolist(), strict=True))
        if self._pending is not None and self._pending[2].query():
            done_names, host, _ = self._pending
            self._shown = dict(zip(done_names, host.tolist(), strict=True))
            self._pending = None
        if self._pending is None:
            host = torch.empty(means.shape, dtype=means.dtype, pin_memory=True)
            host.copy_(means, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (names, host, event)
        return self._shown


@dataclass
class RunLog:
    """metrics.jsonl in the run folder: one JSON object a line, flushed as written."""

    path: Path
    enabled: bool = True
    records: list[dict[str, Any]] = field(default_factory=list)

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        self.records.append(record)
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume

    # ------------------------------------------------------------------ set-up
    def _prepare_run_dir(self, dist: DistInfo) -> dict[str, Any] | None:
        """Check the run folder; on resume return the checkpoint to continue from."""
        has_ckpt = (self.run_dir / ckpt.LAST).exists() or (self.run_dir / ckpt.PREVIOUS).exists()
        if not self.resume:
            if has_ckpt:
                raise CheckpointError(
                    f"'{self.run_dir}' already holds a run. Pass --resume to continue it, or choose another --out."
                )
            if dist.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            barrier()
            return None
        if not has_ckpt:
            raise CheckpointError(f"--resume: no checkpoint in '{self.run_dir}' to continue from.")
        state = ckpt.load_latest(self.run_dir)
        if state["method"] != self.cfg.method:
            raise CheckpointError(
                f"--resume: '{self.run_dir}' was trained with method '{state['method']}', not '{self.cfg.method}'. "
                "Resume it with its own method, or start a new run with another --out."
            )
        diffs = [
            d
            for d in config_differences(state["config"], self.cfg.to_dict())
            if d not in RESUMABLE_CHANGES
        ]
        if diffs:
            raise CheckpointError(
                f"--resume: the config differs from the run's in {', '.join(diffs)}. Only "
                f"{', '.join(RESUMABLE_CHANGES)} may change on resume; start a new run for the rest."
            )
        check_resume_epochs(state, self.cfg)
        return state

    # ------------------------------------------------------------------ main loop
    def fit(self) -> RunResult:
        """Train (or resume) holding the run folder's lock; see engine/runfolder.py."""
        with RunFolder(self.run_dir, self.resume):
            return self._fit()

    def _fit(self) -> RunResult:
        cfg, t_start = self.cfg, time.time()
        check_names(cfg)  # fail on a typo before minutes of data loading
        device = resolve_device(cfg.train.device)
        if cfg.train.cpu_threads:
            torch.set_num_threads(cfg.train.cpu_threads)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed view shapes: pick the fastest kernels
        dist = init_from_env(device.type)
        if device.type == "cuda" and dist.world_size > 1:
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        state = self._prepare_run_dir(dist)
        seed_everything(cfg.train.seed)
        fit_set, eval_set = load_protocol(
            cfg.dataset,
            cfg.data.protocol,
            cfg.data.data_dir,
            image_size=cfg.data.image_size,
            download=cfg.data.download,
            bad_images=cfg.data.bad_images,
            include_unlabeled=cfg.data.include_unlabeled,
            all_splits=cfg.data.all_splits,
        )
        if len(fit_set) == 0:
            raise DataError(f"dataset '{cfg.dataset}' gave no training images.")
        k = resolve_num_clusters(cfg, fit_set, eval_set)
        cfg = self.cfg = planned_config(cfg, len(fit_set), k)
        image_size = fit_set.image_size[0]
        fingerprint = data_fingerprint(fit_set)
        if state is not None:  # before anything in the run folder changes
            check_same_data(state, fingerprint, cfg)
        method = build_method(cfg, k, image_size, len(fit_set)).to(device)
        eval_tf = evaluation_transform(cfg, method, image_size)
        amp = autocast_dtype(cfg, device)
        frozen = None
        if not method.encoder.trainable:  # heads train on cached features of the frozen encoder
            frozen = FrozenFeatures.build(
                method.encoder,
                fit_set,
                eval_set,
                cfg,
                device,
                amp,
                cfg.train.progress and dist.is_main,
            )
        eval_features = frozen.eval if frozen is not None else None
        log = RunLog(self.run_dir / "metrics.jsonl", enabled=dist.is_main)
        ctx = FitContext(
            fit_set,
            device,
            cfg.train.seed,
            0,
            eval_tf,
            cfg.train.eval_batch_size,
            amp,
            progress=cfg.train.progress and dist.is_main,
            fit_features=frozen.fit[0].to(device) if frozen is not None else None,
        )
        meta = {
            "num_clusters": k,
            "image_size": image_size,
            "num_samples": len(fit_set),
            "class_names": list(eval_set.class_names),
            "device": device_description(device),
            "data": fingerprint,
        }

        spec = method.view_spec()
        epochs = cfg.train.epochs if spec is not None else 0
        steps_per_epoch = num_batches(len(fit_set), cfg.train.batch_size) if epochs else 0
        if epochs and steps_per_epoch == 0:
            raise ConfigError(
                f"batch size {cfg.train.batch_size} exceeds the {len(fit_set)} training images."
            )
        if cfg.train.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
        total_steps = epochs * steps_per_epoch
        if dist.world_size > 1 and epochs and cfg.train.sync_batchnorm:
            # BatchNorm over the global batch; before the optimiser, which must see the new modules.
            # PyTorch's SyncBatchNorm is CUDA-only; GlobalBatchNorm runs on gloo too.
            if device.type == "cuda":
                method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)  # type: ignore[assignment]
            else:
                method = convert_to_global_batchnorm(method)  # type: ignore[assignment]
        # before the optimiser, whose state must take the parameters' memory format
        channels_last = apply_speed_settings(method, cfg, device) if epochs else False
        optimizer = build_optimizer(method.parameter_groups(), cfg, device) if epochs else None

        start_epoch = 0
        if state is not None:
            method.load_checkpoint_state(state["model"])
            if optimizer is not None and state.get("optimizer"):
                optimizer.load_state_dict(state["optimizer"])
                match_parameter_layout(optimizer)
            ckpt.restore_rng(state["rng"])
            start_epoch = state["epoch"]
            if dist.is_main:  # those epochs run again: their lines go
                truncate_log(log.path, state)
            log.write({"event": "resume", "epoch": start_epoch})
        if dist.is_main:
            write_config(self.run_dir, cfg)

        def save(epoch: int, finished: bool) -> None:
            if dist.is_main:
                ckpt.save_atomic(
                    {
                        "format": ckpt.FORMAT_VERSION,
                        "method": cfg.method,
                        "config": cfg.to_dict(),
                        "meta": meta,
                        "epoch": epoch,
                        "finished": finished,
                        "model": method.checkpoint_state(),
                        "optimizer": optimizer.state_dict() if optimizer is not None else {},
                        "rng": ckpt.rng_state(),
                        "log_bytes": log_size(log.path),
                    },
                    self.run_dir / ckpt.LAST,
                )
            barrier()  # no process runs ahead of a checkpoint that is not yet on disk

        model: torch.nn.Module = method
        if dist.world_size > 1 and epochs:
            # Buffers (memory banks, centres) are kept equal by the methods' own collectives.
            model = torch.nn.parallel.DistributedDataParallel(
                method,
                device_ids=[device.index] if device.type == "cuda" else None,
                **NO_BUFFER_SYNC,
            )
        method.on_train_start(ctx)
        auxiliary = method.auxiliary_stream(ctx) if epochs else None
        if auxiliary is not None:
            check_auxiliary_stream(auxiliary, cfg.method, dist.world_size)
        if epochs:
            on_device = data_on_device(cfg, device, fit_set.images)
            if frozen is not None:
                frozen = frozen.to(device)
                on_device = True  # feature views are cheap: no worker processes
            else:
                views = ViewGenerator(spec)  # type: ignore[arg-type]
                images = fit_set.images.to(device) if on_device else fit_set.images

            def views_of(
                batches: list[torch.Tensor], global_batch: int, epoch: int, stream: str
            ) -> EpochViews | EpochFeatureViews:
                """This process's slices of `batches` -> a dataset of their views, keyed by stream."""
                offset = dist.rank * len(batches[0])
                if frozen is not None:
                    return EpochFeatureViews(
                        frozen,
                        batches,
                        spec.num_views,  # type: ignore[union-attr]
                        cfg.encoder.feature_noise,
                        cfg.train.seed,
                        epoch,
                        offset,
                        global_batch,
                        stream,
                    )
                return EpochViews(
                    images, batches, views, cfg.train.seed, epoch, offset, global_batch, stream
                )

            for epoch in range(start_epoch, epochs):
                ctx.epoch = epoch
                method.train()
                method.on_epoch_start(ctx)
                batches = epoch_batches(
                    len(fit_set),
                    cfg.train.batch_size,
                    cfg.train.seed,
                    epoch,
                    dist.rank,
                    dist.world_size,
                )[:steps_per_epoch]

                aux_data = None
                if auxiliary is not None:
                    aux_batches = stream_batches(
                        auxiliary.rows,
                        auxiliary.batch_size,
                        len(batches),
                        cfg.train.seed,
                        epoch,
                        dist.rank,
                        dist.world_size,
                    )
                    aux_data = views_of(aux_batches, auxiliary.batch_size, epoch, "auxiliary")
                data = StepBatches(
                    views_of(batches, cfg.train.batch_size, epoch, "views"), aux_data
                )
                stats = self._train_epoch(
                    method,
                    model,
                    optimizer,
                    data,
                    on_device,
                    device,
                    amp,
                    epoch,
                    steps_per_epoch,
                    total_steps,
                    dist,
                    channels_last,
                )
                log.write({"event": "train", "epoch": epoch + 1, **stats})
                last = epoch + 1 == epochs
                if cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0 and not last:
                    method.before_evaluate(ctx)
                    self._evaluate(
                        method, eval_set, eval_tf, device, amp, log, epoch + 1, eval_features
                    )
                if (epoch + 1) % cfg.train.checkpoint_every == 0 or last:
                    save(epoch + 1, finished=False)
        method.on_train_end(ctx)
        method.before_evaluate(ctx)
        scores, probs = self._evaluate(
            method, eval_set, eval_tf, device, amp, log, epochs, eval_features
        )
        save(epochs, finished=True)
        summary = {
            "method": cfg.method,
            "dataset": cfg.dataset,
            "data_dir": cfg.data.data_dir,
            "protocol": cfg.data.protocol,
            "fit_split": fit_set.name,
            "eval_split": eval_set.name,
            "n_fit": len(fit_set),
            "n_eval": len(eval_set),
            "num_clusters": k,
            "class_names": list(eval_set.class_names),
            "encoder": cfg.encoder.name,
            "epochs": epochs,
            "seed": cfg.train.seed,
            "device": meta["device"],
            "torch": torch.__version__,
            "wall_time_s": round(time.time() - t_start, 2),
            "metrics": scores,
        }
        summary["schedule"] = {
            "batch_size": cfg.train.batch_size,
            "steps": total_steps,
            "warmup_steps": warmup_steps(cfg.train.schedule, steps_per_epoch, total_steps),
        }
        summary["warnings"] = health_warnings(method, summary["schedule"], steps_per_epoch, probs)
        names = method.cluster_names()  # e.g. SIC's nearest nouns; read by evaluate/predict/report
        if dist.is_main:
            write_predictions(self.run_dir / "predictions.csv", eval_set, probs, names)
            if names is not None:
                (self.run_dir / "cluster_names.json").write_text(json.dumps(names, indent=1))
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return RunResult(self.run_dir, summary)

    def _train_epoch(
        self,
        method: Method,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        data: StepBatches,
        on_device: bool,
        device: torch.device,
        amp: torch.dtype | None,
        epoch: int,
        steps_per_epoch: int,
        total_steps: int,
        dist: DistInfo,
        channels_last: bool = False,
    ) -> dict[str, Any]:
        cfg = self.cfg
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        batches: Iterator[tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor] | None]]
        if on_device or cfg.data.num_workers == 0:
            batches = (data[i] for i in range(len(data)))
        else:
            batches = iter(
                torch.utils.data.DataLoader(
                    data,
                    batch_size=None,
                    shuffle=False,
                    num_workers=cfg.data.num_workers,
                    pin_memory=device.type == "cuda",
                    persistent_workers=False,
                )
            )
        means = RunningMeans(device)
        t0 = time.time()
        bar = tqdm(
            batches,
            total=len(data),
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            leave=False,
            disable=not (cfg.train.progress and dist.is_main),
        )
        images_seen = 0

        def to_step_device(views: list[torch.Tensor]) -> list[torch.Tensor]:
            return [v.to(device, non_blocking=True, memory_format=memory_format) for v in views]

        for i, (views, idx, aux) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            views = to_step_device(views)
            info = StepInfo(
                epoch,
                step,
                i,
                steps_per_epoch,
                total_steps,
                to_device(idx, device),
                to_step_device(aux) if aux is not None else None,
            )
            factor = lr_factor(step, cfg.train.schedule, steps_per_epoch, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            loss, losses = optimisation_step(
                method, model, optimizer, views, info, amp, cfg.train.grad_clip
            )
            means.add({"loss": loss, **losses})
            images_seen += sum(v.shape[0] for v in views)
            if not bar.disable and i % PROGRESS_EVERY == 0:
                shown = means.read()
                if shown is not None:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
        bar.close()
        n = max(len(data), 1) * dist.world_size
        # the one host sync of the epoch
        stats = {k: all_reduce_sum(v).item() / n for k, v in means.sums.items()}
        if not math.isfinite(stats.get("loss", 0.0)):
            raise DeepclustError(
                f"the loss became {stats['loss']} in epoch {epoch + 1}: lower train.optimizer.lr, or set "
                "train.grad_clip, and resume from the last good checkpoint."
            )
        seconds = time.time() - t0
        stats.update(
            {
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 3),
                "images_per_s": round(images_seen * dist.world_size / max(seconds, 1e-9), 1),
            }
        )
        return stats

    def _evaluate(
        self,
        method: Method,
        eval_set: ImageSet,
        eval_tf: EvalTransform,
        device: torch.device,
        amp: torch.dtype | None,
        log: RunLog,
        epoch: int,
        features: torch.Tensor | None = None,
    ) -> tuple[dict[str, Any] | None, torch.Tensor]:
        """Score the eval set (or its cached features [M, D] when the encoder is frozen)."""
        method.eval()
        inputs = eval_set if features is None else features
        probs = run_batched(
            method.predict_proba, inputs, eval_tf, device, self.cfg.train.eval_batch_size, amp
        )
        scores = None
        if eval_set.has_labels:
            scores = score(
                eval_set.labels.numpy(), probs.argmax(1).cpu().numpy(), num_clusters=probs.shape[1]
            ).as_dict()
            log.write(
                {
                    "event": "eval",
                    "epoch": epoch,
                    "split": eval_set.name,
                    "protocol": self.cfg.data.protocol,
                    **scores,
                }
            )
        return scores, probs.cpu()


def write_predictions(
    path: Path, data: ImageSet, probs: torch.Tensor, names: list[list[str]] | None
) -> None:
    """The run's predictions.csv (evaluation/predictions.py has the columns)."""
    named = {c: ", ".join(words) for c, words in enumerate(names)} if names else None
    write_predictions_csv(path, prediction_rows(probs, data.paths, data.labels, named))
