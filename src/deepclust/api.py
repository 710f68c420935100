"""The Python front door: train, evaluate and predict. The CLI is a thin layer over this.

from deepclust import api
cfg = api.make_config("kmeans", "digits", overrides={"data.protocol": "all"})
result = api.train(cfg, out="runs/digits")
print(api.evaluate("runs/digits")["acc"])
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from deepclust.config import RunConfig, build_config, from_dict
from deepclust.data.datasets import load_split
from deepclust.data.images import load_image_paths
from deepclust.data.store import ImageSet
from deepclust.data.views import EvalTransform
from deepclust.engine import checkpoint as ckpt
from deepclust.engine.context import run_batched
from deepclust.engine.trainer import (
    RunResult,
    Trainer,
    autocast_dtype,
    build_method,
    resolve_device,
)
from deepclust.errors import CheckpointError, ConfigError, DeepclustError
from deepclust.evaluation.metrics import score
from deepclust.methods import Method


def make_config(
    method: str | None = None,
    dataset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | list[tuple[str, Any]] | None = None,
) -> RunConfig:
    """Defaults < configs/<method>/<dataset>.yaml < config_file < overrides (dotted keys)."""
    items = list(overrides.items()) if isinstance(overrides, dict) else list(overrides or [])
    return build_config(method, dataset, config_file, items)


def resume_config(
    run_dir: str | Path,
    method: str | None = None,
    dataset: str | None = None,
    overrides: dict[str, Any] | list[tuple[str, Any]] | None = None,
) -> RunConfig:
    """The config of an existing run, with the overrides applied (checked again by the trainer)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(
            f"--resume: '{run_dir}' is not a deepclust run folder (no config.yaml)."
        )
    stored = yaml.safe_load(path.read_text())
    for name, given in (("method", method), ("dataset", dataset)):
        if given is not None and given != stored[name]:
            raise CheckpointError(
                f"--resume: '{run_dir}' is a run of {name} '{stored[name]}', not '{given}'. "
                "Resume it as it is, or start a new run with another --out."
            )
    items = list(overrides.items()) if isinstance(overrides, dict) else list(overrides or [])
    from deepclust.config import set_dotted

    for key, value in items:
        set_dotted(stored, key, value)
    return from_dict(RunConfig, stored)


def default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.method}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(cfg: RunConfig, out: str | Path | None = None, resume: bool = False) -> RunResult:
    """Train (or resume) a run; returns its folder and summary (metrics on the evaluation split)."""
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    return Trainer(cfg, run_dir, resume=resume).fit()


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    method: Method
    meta: dict[str, Any]
    device: torch.device

    @property
    def eval_transform(self) -> EvalTransform:
        return self.method.encoder.eval_transform()

    @torch.no_grad()
    def predict_proba(self, images: ImageSet, batch_size: int | None = None) -> torch.Tensor:
        """uint8 images of the run's size -> cluster probabilities [N,K] (CPU)."""
        if images.image_size != (self.meta["image_size"],) * 2:
            raise DeepclustError(
                f"images are {images.image_size[0]}x{images.image_size[1]} but this run was trained on "
                f"{self.meta['image_size']} px images."
            )
        self.method.eval()
        bs = batch_size or self.config.train.eval_batch_size
        return run_batched(
            self.method.predict_proba,
            images,
            self.eval_transform,
            self.device,
            bs,
            autocast_dtype(self.config, self.device),
        ).cpu()


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    """Rebuild a trained method from its run folder (weights_only checkpoint)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder '{run_dir}' does not exist.")
    state = ckpt.load_latest(run_dir)
    cfg = from_dict(RunConfig, state["config"])
    meta = state["meta"]
    if not state.get("finished"):
        import warnings

        warnings.warn(
            f"'{run_dir}' has not finished training (epoch {state['epoch']}); using its last checkpoint.",
            stacklevel=2,
        )
    dev = resolve_device(device)
    method = build_method(cfg, meta["num_clusters"], meta["image_size"], meta["num_samples"])
    method.load_checkpoint_state(state["model"])
    return LoadedRun(run_dir, cfg, method.to(dev).eval(), meta, dev)


def _eval_split(cfg: RunConfig, split: str, image_size: int) -> ImageSet:
    kwargs = dict(image_size=image_size, download=False, bad_images=cfg.data.bad_images)
    if split == "all":
        from deepclust.data.datasets import dataset_info

        splits = [s for s in ("train", "test") if s in dataset_info(cfg.dataset).splits]
        sets = []
        for s in splits:
            try:
                sets.append(load_split(cfg.dataset, s, cfg.data.data_dir, **kwargs))
            except DeepclustError:
                if s == "train":
                    raise
        return (
            ImageSet.concat(sets, name="+".join(x.name for x in sets)) if len(sets) > 1 else sets[0]
        )
    return load_split(cfg.dataset, split, cfg.data.data_dir, **kwargs)


def evaluate(run_dir: str | Path, split: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Score a run on `split` ('test', 'train' or 'all' = train+test; default: the run's protocol)."""
    run = load_run(run_dir, device)
    cfg = run.config
    split = split or ("test" if cfg.data.protocol == "train-test" else "all")
    if split not in ("test", "train", "all"):
        raise ConfigError(f"--split must be test, train or all; got '{split}'.")
    data = _eval_split(cfg, split, run.meta["image_size"])
    probs = run.predict_proba(data)
    if not data.has_labels:
        raise DeepclustError(
            f"split '{split}' of '{cfg.dataset}' has no labels to evaluate against."
        )
    scores = score(
        data.labels.numpy(), probs.argmax(1).numpy(), num_clusters=probs.shape[1]
    ).as_dict()
    protocol = (
        "train->test"
        if (cfg.data.protocol == "train-test" and split == "test")
        else ("train+test" if cfg.data.protocol == "all" else f"train->{split}")
    )
    return {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "split": split,
        "protocol": protocol,
        "encoder": cfg.encoder.name,
        **scores,
    }


def predict(
    run_dir: str | Path,
    paths: list[str | Path],
    out: str | Path | None = None,
    device: str = "auto",
    bad_images: str = "skip",
) -> list[dict[str, Any]]:
    """Cluster new images (files or folders). Returns rows {path, cluster, confidence}; writes CSV if `out`."""
    run = load_run(run_dir, device)
    images = load_image_paths(paths, image_size=run.meta["image_size"], bad_images=bad_images)
    probs = run.predict_proba(images)
    conf, cluster = probs.max(1)
    rows = [
        {"path": p, "cluster": int(c), "confidence": round(float(q), 4)}
        for p, c, q in zip(images.paths or [], cluster, conf, strict=True)
    ]
    if out is not None:
        with open(out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["path", "cluster", "confidence"])
            writer.writeheader()
            writer.writerows(rows)
    return rows
