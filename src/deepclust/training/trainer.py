"""The one training loop every method runs through.

It knows nothing of any method: it builds data, encoder and method from the config, asks
the method for views and losses, steps the optimiser on the schedule, runs the method's
hooks, evaluates, logs JSON lines and writes atomic checkpoints. Randomness is keyed by
(seed, epoch, batch), so a run resumed from a checkpoint ends where an uninterrupted one does.

`Trainer.fit` holds the run folder (engine/runfolder.py: its lock, and the clean-up of a
failed start) around the phases of `_run`: start (device, processes), the run folder,
data, build (method, optimiser, resume), the epoch loop and finish (last evaluation,
summary, predictions).
"""

from __future__ import annotations

import inspect
import json
import math
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from deepclust.cluster.naming import concepts_of
from deepclust.config import RunConfig
from deepclust.data.datasets import load_protocol
from deepclust.data.store import ImageSet
from deepclust.data.views import EvalTransform, ViewGenerator, ViewSpec
from deepclust.engine import checkpoint as ckpt
from deepclust.engine.batchnorm import convert_to_global_batchnorm
from deepclust.engine.context import FitContext, run_batched
from deepclust.engine.device import autocast_dtype, device_description, resolve_device
from deepclust.engine.distributed import DistInfo, all_reduce_sum, barrier, init_from_env
from deepclust.engine.files import write_atomic
from deepclust.engine.fingerprint import check_same_data, data_fingerprint
from deepclust.engine.frozen import EpochFeatureViews, FrozenFeatures
from deepclust.engine.runfolder import RunFolder, log_size, truncate_log, write_config
from deepclust.engine.sampler import epoch_batches, num_batches, stream_batches
from deepclust.engine.schedule import lr_factor, warmup_steps
from deepclust.engine.transfer import to_device
from deepclust.errors import ConfigError, DataError, DeepclustError
from deepclust.evaluation.metrics import score
from deepclust.evaluation.quality import Quality, quality_of
from deepclust.methods import Method, StepInfo
from deepclust.methods.base import AuxiliaryStream
from deepclust.training.build import (
    apply_speed_settings,
    build_method,
    build_optimizer,
    check_auxiliary_stream,
    check_names,
    data_on_device,
    evaluation_transform,
    match_parameter_layout,
    planned_config,
    resolve_num_clusters,
    seed_everything,
)
from deepclust.training.records import (
    RunLog,
    RunResult,
    concept_names,
    health_warnings,
    skipped_images,
    write_names,
    write_predictions,
)
from deepclust.training.resume import prepare_run_dir
from deepclust.training.self_label import self_label
from deepclust.training.steps import EpochViews, RunningMeans, StepBatches, optimisation_step

# Steps between progress-bar updates (read from the device without waiting for it).
PROGRESS_EVERY = 20

# DDP must not overwrite buffers from rank 0 at every forward (the argument was renamed).
NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers"
    in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


@dataclass
class FitRun:
    """What one fit holds between its phases (built by Trainer._build)."""

    device: torch.device
    dist: DistInfo
    fit_set: ImageSet
    eval_set: ImageSet
    method: Method
    eval_tf: EvalTransform
    amp: torch.dtype | None
    frozen: FrozenFeatures | None
    log: RunLog
    ctx: FitContext
    meta: dict[str, Any]
    spec: ViewSpec | None = None
    epochs: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    channels_last: bool = False
    optimizer: torch.optim.Optimizer | None = None
    start_epoch: int = 0
    model: torch.nn.Module | None = None  # the method, or its DDP wrapper
    auxiliary: AuxiliaryStream | None = None
    on_device: bool = False
    views: ViewGenerator | None = None
    images: torch.Tensor | None = None  # the fit set's images where views are made
    resumed_finished: bool = False  # the checkpoint resumed from was a finished run

    @property
    def eval_features(self) -> torch.Tensor | None:
        """A frozen encoder's cached features of the evaluation set [M, D]."""
        return self.frozen.eval if self.frozen is not None else None


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume

    def fit(self) -> RunResult:
        """Train (or resume) holding the run folder's lock: whichever phase fails, the folder
        is released, and removed again when this start created it (engine/runfolder.py)."""
        with RunFolder(self.run_dir, self.resume):
            return self._run()

    def _run(self) -> RunResult:
        t_start = time.time()
        device, dist = self._start()
        state = prepare_run_dir(self.run_dir, self.cfg, self.resume, dist)
        seed_everything(self.cfg.train.seed)
        fit_set, eval_set, k = self._load_data()
        run = self._build(fit_set, eval_set, k, device, dist, state)
        self._start_training(run)
        for epoch in range(run.start_epoch, run.epochs):
            self._epoch(run, epoch)
        return self._finish(run, t_start)

    # ------------------------------------------------------------------ phases
    def _start(self) -> tuple[torch.device, DistInfo]:
        """Names checked (before minutes of data loading), the device, the process group."""
        cfg = self.cfg
        check_names(cfg)
        device = resolve_device(cfg.train.device)
        if cfg.train.cpu_threads:
            torch.set_num_threads(cfg.train.cpu_threads)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed view shapes: pick the fastest kernels
        dist = init_from_env(device.type)
        if device.type == "cuda" and dist.world_size > 1:
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        return device, dist

    def _load_data(self) -> tuple[ImageSet, ImageSet, int]:
        """The fit and evaluation sets and K; self.cfg becomes the config planned for them."""
        cfg = self.cfg
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
        self.cfg = planned_config(cfg, len(fit_set), k)
        return fit_set, eval_set, k

    def _build(
        self,
        fit_set: ImageSet,
        eval_set: ImageSet,
        k: int,
        device: torch.device,
        dist: DistInfo,
        state: dict[str, Any] | None,
    ) -> FitRun:
        """Method, cached features of a frozen encoder, optimiser; a resume's state loaded."""
        cfg = self.cfg
        image_size = fit_set.image_size[0]
        fingerprint = data_fingerprint(fit_set)
        if state is not None:  # before anything in the run folder changes
            check_same_data(state, fingerprint, cfg)
        method = build_method(cfg, k, image_size, len(fit_set)).to(device)
        eval_tf = evaluation_transform(cfg, method, image_size)
        amp = autocast_dtype(cfg, device)
        progress = cfg.train.progress and dist.is_main
        frozen = None
        if not method.encoder.trainable:  # heads train on cached features of the frozen encoder
            frozen = FrozenFeatures.build(
                method.encoder, fit_set, eval_set, cfg, device, amp, progress
            )
        log = RunLog(self.run_dir / "metrics.jsonl", enabled=dist.is_main)
        fit_features = frozen.fit[0].to(device) if frozen is not None else None
        ctx = FitContext(
            fit_set,
            device,
            cfg.train.seed,
            0,
            eval_tf,
            cfg.train.eval_batch_size,
            amp,
            progress=progress,
            fit_features=fit_features,
        )
        meta = {
            "num_clusters": k,
            "image_size": image_size,
            "num_samples": len(fit_set),
            "class_names": list(eval_set.class_names),
            "device": device_description(device),
            "data": fingerprint,
        }
        run = FitRun(device, dist, fit_set, eval_set, method, eval_tf, amp, frozen, log, ctx, meta)
        self._plan_epochs(run)
        self._build_optimisation(run)
        if state is not None:
            self._restore(run, state)
        if dist.is_main:
            write_config(self.run_dir, cfg)
        return run

    def _plan_epochs(self, run: FitRun) -> None:
        """Epochs and steps: none for a method without views (k-means and the like)."""
        train = self.cfg.train
        run.spec = run.method.view_spec()
        run.epochs = train.epochs if run.spec is not None else 0
        n = len(run.fit_set)
        steps = num_batches(n, train.batch_size) if run.epochs else 0
        if run.epochs and steps == 0:
            raise ConfigError(f"batch size {train.batch_size} exceeds the {n} training images.")
        if train.max_steps_per_epoch:
            steps = min(steps, train.max_steps_per_epoch)
        run.steps_per_epoch, run.total_steps = steps, run.epochs * steps

    def _build_optimisation(self, run: FitRun) -> None:
        """Global BatchNorm, speed switches, then the optimiser (which must see both)."""
        if not run.epochs:
            return
        cfg = self.cfg
        if run.dist.world_size > 1 and cfg.train.sync_batchnorm:
            # PyTorch's SyncBatchNorm is CUDA-only; GlobalBatchNorm runs on gloo too.
            if run.device.type == "cuda":
                run.method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(run.method)  # type: ignore[assignment]
            else:
                run.method = convert_to_global_batchnorm(run.method)  # type: ignore[assignment]
        run.channels_last = apply_speed_settings(run.method, cfg, run.device)
        run.optimizer = build_optimizer(run.method.parameter_groups(), cfg, run.device)

    def _restore(self, run: FitRun, state: dict[str, Any]) -> None:
        """Weights, optimiser and random state of the checkpoint a resume continues from."""
        run.method.load_checkpoint_state(state["model"])
        if run.optimizer is not None and state.get("optimizer"):
            run.optimizer.load_state_dict(state["optimizer"])
            match_parameter_layout(run.optimizer)
        ckpt.restore_rng(state["rng"])
        run.start_epoch = state["epoch"]
        run.resumed_finished = bool(state.get("finished"))
        if run.dist.is_main:  # those epochs run again: their lines go
            truncate_log(run.log.path, state)
        run.log.write({"event": "resume", "epoch": run.start_epoch})

    def _start_training(self, run: FitRun) -> None:
        """DDP wrapper, the method's start hook, its auxiliary stream, where views are made."""
        run.model = run.method
        if run.dist.world_size > 1 and run.epochs:
            # Buffers (memory banks, centres) are kept equal by the methods' own collectives.
            run.model = torch.nn.parallel.DistributedDataParallel(
                run.method,
                device_ids=[run.device.index] if run.device.type == "cuda" else None,
                **NO_BUFFER_SYNC,
            )
        run.method.on_train_start(run.ctx)
        run.auxiliary = run.method.auxiliary_stream(run.ctx) if run.epochs else None
        if run.auxiliary is not None:
            check_auxiliary_stream(run.auxiliary, self.cfg.method, run.dist.world_size)
        if not run.epochs:
            return
        run.on_device = data_on_device(self.cfg, run.device, run.fit_set.images)
        if run.frozen is not None:
            run.frozen = run.frozen.to(run.device)
            run.on_device = True  # feature views are cheap: no worker processes
        else:
            run.views = ViewGenerator(run.spec)  # type: ignore[arg-type]
            images = run.fit_set.images
            run.images = images.to(run.device) if run.on_device else images

    def _epoch(self, run: FitRun, epoch: int) -> None:
        """One epoch: its batches' views, the steps, its log line, evaluation, checkpoint."""
        train = self.cfg.train
        run.ctx.epoch = epoch
        run.method.train()
        run.method.on_epoch_start(run.ctx)
        dist = run.dist
        batches = epoch_batches(
            len(run.fit_set), train.batch_size, train.seed, epoch, dist.rank, dist.world_size
        )[: run.steps_per_epoch]
        aux_data = None
        if run.auxiliary is not None:
            aux = run.auxiliary
            aux_batches = stream_batches(
                aux.rows,
                aux.batch_size,
                len(batches),
                train.seed,
                epoch,
                dist.rank,
                dist.world_size,
            )
            aux_data = self._views_of(run, aux_batches, aux.batch_size, epoch, "auxiliary")
        data = StepBatches(self._views_of(run, batches, train.batch_size, epoch, "views"), aux_data)
        model, optimizer = run.model, run.optimizer
        assert model is not None and optimizer is not None  # set up for every run with epochs
        stats = self._train_epoch(
            run.method,
            model,
            optimizer,
            data,
            run.on_device,
            run.device,
            run.amp,
            epoch,
            run.steps_per_epoch,
            run.total_steps,
            dist,
            run.channels_last,
        )
        run.log.write({"event": "train", "epoch": epoch + 1, **stats})
        last = epoch + 1 == run.epochs
        if train.eval_every and (epoch + 1) % train.eval_every == 0 and not last:
            run.method.before_evaluate(run.ctx)
            self._evaluate(run, epoch + 1)
        if (epoch + 1) % train.checkpoint_every == 0 or last:
            self._save(run, epoch + 1, finished=False)

    def _finish(self, run: FitRun, t_start: float) -> RunResult:
        """The method's end hooks, the last evaluation and checkpoint, the run's files."""
        run.method.on_train_end(run.ctx)
        self._self_label(run)
        run.method.before_evaluate(run.ctx)
        scores, probs = self._evaluate(run, run.epochs)
        self._save(run, run.epochs, finished=True)
        summary = self._summary(run, scores, t_start)
        summary["warnings"] = health_warnings(
            run.method, summary["schedule"], run.steps_per_epoch, probs
        )
        quality = self._quality(run, probs) if run.dist.is_main else None
        if quality is not None:
            summary["quality"] = quality.as_dict()
            summary["warnings"] += quality.warnings
        # e.g. SIC's nearest nouns, else the frozen encoder's classifier's concepts
        names = run.method.cluster_names()
        concepts = self._concepts(run, probs) if names is None and run.dist.is_main else None
        if run.dist.is_main:
            shown = names or concept_names(concepts)
            write_predictions(self.run_dir / "predictions.csv", run.eval_set, probs, shown, quality)
            write_names(self.run_dir, names, concepts)
            write_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        return RunResult(self.run_dir, summary)

    # ------------------------------------------------------------------ parts
    def _quality(self, run: FitRun, probs: torch.Tensor) -> Quality | None:
        """The label-free quality of a frozen run's clusters on its cached features
        (evaluation/quality.py); None when the encoder was trained or too few images."""
        features = run.eval_features
        if features is None or len(features) <= 2:
            return None
        # the views' graph (fit rows, self first) serves when the scored set is the fit set
        fit, scored = run.fit_set, run.eval_set
        same = fit.images.data_ptr() == scored.images.data_ptr() and len(fit) == len(scored)
        graph = run.frozen.neighbours if same and self.cfg.encoder.centre_neighbours else None  # type: ignore[union-attr]
        knn = graph.cpu().numpy() if graph is not None else None
        clusters = probs.argmax(1).numpy()
        return quality_of(features.float().numpy(), clusters, probs.shape[1], knn)[0]

    def _concepts(self, run: FitRun, probs: torch.Tensor) -> dict[str, Any] | None:
        """A frozen run's cluster names from its encoder's ImageNet classifier on the cached
        features (cluster/naming.py); None without one."""
        features = run.eval_features
        if features is None or not len(features):
            return None
        return concepts_of(run.method.encoder, features, probs.argmax(1), probs.shape[1])

    def _self_label(self, run: FitRun) -> None:
        """A frozen run's self-labelling stage (training/self_label.py), its heads scored
        before it too (an eval line); not again on a finished checkpoint, which holds them."""
        done = run.resumed_finished and run.start_epoch >= run.epochs
        if run.frozen is None or not self.cfg.self_label.epochs or done:
            return
        run.method.before_evaluate(run.ctx)
        self._evaluate(run, run.epochs)
        d = run.dist
        stats = self_label(run.method, run.frozen.to(run.device), self.cfg, d.rank, d.world_size)
        run.log.write({"event": "self_label", **stats})

    def _views_of(
        self, run: FitRun, batches: list[torch.Tensor], global_batch: int, epoch: int, stream: str
    ) -> EpochViews | EpochFeatureViews:
        """This process's slices of `batches` -> a dataset of their views, keyed by stream."""
        offset = run.dist.rank * len(batches[0])
        seed = self.cfg.train.seed
        if run.frozen is not None:
            return EpochFeatureViews(
                run.frozen,
                batches,
                run.spec.num_views,  # type: ignore[union-attr]
                self.cfg.encoder.feature_noise,
                seed,
                epoch,
                offset,
                global_batch,
                stream,
                run.spec.anchors,  # type: ignore[union-attr]
            )
        images, views = run.images, run.views
        assert images is not None and views is not None  # image views: set by _start_training
        return EpochViews(images, batches, views, seed, epoch, offset, global_batch, stream)

    def _save(self, run: FitRun, epoch: int, finished: bool) -> None:
        """last.pt (atomic, on the main process); every process waits until it is on disk."""
        cfg = self.cfg
        if run.dist.is_main:
            ckpt.save_atomic(
                {
                    "format": ckpt.FORMAT_VERSION,
                    "method": cfg.method,
                    "config": cfg.to_dict(),
                    "meta": run.meta,
                    "epoch": epoch,
                    "finished": finished,
                    "model": run.method.checkpoint_state(),
                    "optimizer": run.optimizer.state_dict() if run.optimizer is not None else {},
                    "rng": ckpt.rng_state(),
                    "log_bytes": log_size(run.log.path),
                },
                self.run_dir / ckpt.LAST,
            )
        barrier()  # no process runs ahead of a checkpoint that is not yet on disk

    def _summary(
        self, run: FitRun, scores: dict[str, Any] | None, t_start: float
    ) -> dict[str, Any]:
        """summary.json without its warnings."""
        cfg = self.cfg
        graph = run.frozen.graph if run.frozen is not None else None
        return {
            "method": cfg.method,
            "dataset": cfg.dataset,
            "data_dir": cfg.data.data_dir,
            "protocol": cfg.data.protocol,
            "fit_split": run.fit_set.name,
            "eval_split": run.eval_set.name,
            "n_fit": len(run.fit_set),
            "n_eval": len(run.eval_set),
            "num_clusters": run.meta["num_clusters"],
            "class_names": list(run.eval_set.class_names),
            "encoder": cfg.encoder.name,
            "epochs": run.epochs,
            "seed": cfg.train.seed,
            "device": run.meta["device"],
            "torch": torch.__version__,
            "host": socket.gethostname(),  # `report` asks for --data-dir on another machine
            "wall_time_s": round(time.time() - t_start, 2),
            "metrics": scores,
            "skipped_images": skipped_images(run.fit_set, run.eval_set),
            "schedule": {
                "batch_size": cfg.train.batch_size,
                "steps": run.total_steps,
                "warmup_steps": warmup_steps(
                    cfg.train.schedule, run.steps_per_epoch, run.total_steps
                ),
            },
            **({"neighbour_graph": graph} if graph is not None else {}),
        }

    def _step_batches(
        self, data: StepBatches, on_device: bool, device: torch.device
    ) -> Iterator[tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor] | None]]:
        """The epoch's steps in order: made here, or by data.num_workers worker processes."""
        workers = self.cfg.data.num_workers
        if on_device or workers == 0:
            return (data[i] for i in range(len(data)))
        return iter(
            torch.utils.data.DataLoader(
                data,
                batch_size=None,
                shuffle=False,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
        )

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
        """The steps of one epoch -> its mean losses, last lr, seconds and images/s."""
        cfg = self.cfg
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        means = RunningMeans(device)
        t0 = time.time()
        bar = tqdm(
            self._step_batches(data, on_device, device),
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
            idx = to_device(idx, device)
            aux_views = to_step_device(aux) if aux is not None else None
            info = StepInfo(epoch, step, i, steps_per_epoch, total_steps, idx, aux_views)
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
        stats = self._epoch_means(means, len(data), dist, epoch)
        seconds = time.time() - t0
        stats["lr"] = optimizer.param_groups[0]["lr"]
        stats["seconds"] = round(seconds, 3)
        stats["images_per_s"] = round(images_seen * dist.world_size / max(seconds, 1e-9), 1)
        return stats

    @staticmethod
    def _epoch_means(
        means: RunningMeans, steps: int, dist: DistInfo, epoch: int
    ) -> dict[str, float]:
        """The epoch's mean losses over all processes: the one host sync of the epoch."""
        n = max(steps, 1) * dist.world_size
        stats = {k: all_reduce_sum(v).item() / n for k, v in means.sums.items()}
        if not math.isfinite(stats.get("loss", 0.0)):
            raise DeepclustError(
                f"the loss became {stats['loss']} in epoch {epoch + 1}: lower train.optimizer.lr, or set "
                "train.grad_clip, and resume from the last good checkpoint."
            )
        return stats

    def _evaluate(self, run: FitRun, epoch: int) -> tuple[dict[str, Any] | None, torch.Tensor]:
        """Score the eval set (or its cached features [M, D] when the encoder is frozen)
        -> (scores, or None without labels; probabilities [M, K] on the CPU)."""
        run.method.eval()
        features = run.eval_features
        inputs = run.eval_set if features is None else features
        probs = run_batched(
            run.method.predict_proba,
            inputs,
            run.eval_tf,
            run.device,
            self.cfg.train.eval_batch_size,
            run.amp,
        )
        scores = None
        if run.eval_set.has_labels:
            scores = score(
                run.eval_set.labels.numpy(),
                probs.argmax(1).cpu().numpy(),
                num_clusters=probs.shape[1],
            ).as_dict()
            record = {"event": "eval", "epoch": epoch, "split": run.eval_set.name}
            run.log.write({**record, "protocol": self.cfg.data.protocol, **scores})
        return scores, probs.cpu()
