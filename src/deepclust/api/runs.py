"""A run's config and its folder: make_config / resume_config, load_run (a trained
method rebuilt from its checkpoint) and what every verb reads from a run folder."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deepclust.config import RunConfig, build_config, from_dict
from deepclust.data.datasets import load_split
from deepclust.data.store import ImageSet
from deepclust.data.views import EvalTransform
from deepclust.engine import checkpoint as ckpt
from deepclust.engine.context import run_batched
from deepclust.engine.device import autocast_dtype, resolve_device
from deepclust.engine.runfolder import read_run_json, wrong_field
from deepclust.errors import CheckpointError, DeepclustError
from deepclust.methods import Method
from deepclust.training.build import build_method, evaluation_transform


def make_config(
    method: str | None = None,
    dataset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | list[tuple[str, Any]] | None = None,
) -> RunConfig:
    """Defaults < configs/<method>/<dataset>.yaml < config_file < overrides (dotted keys).

    data.data_dir is made absolute, so the run folder names the same data from anywhere."""
    items = list(overrides.items()) if isinstance(overrides, dict) else list(overrides or [])
    cfg = build_config(method, dataset, config_file, items)
    if cfg.data.data_dir:  # stored absolute: evaluate, select and resume work from any folder
        cfg.data.data_dir = str(Path(cfg.data.data_dir).expanduser().resolve())
    return cfg


def resume_config(
    run_dir: str | Path,
    method: str | None = None,
    dataset: str | None = None,
    overrides: dict[str, Any] | list[tuple[str, Any]] | None = None,
) -> RunConfig:
    """The config of an existing run, with the overrides applied (checked again by the trainer).

    A missing or broken config.yaml falls back to the checkpoint's config, with a warning.
    """
    from deepclust.engine.runfolder import stored_config

    stored = stored_config(Path(run_dir))
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


@dataclass
class LoadedRun:
    """A trained method rebuilt from its run folder. cut: for a `recut` run, the steps from
    the trained model's clusters to the run's (cluster/cut.py), applied to every prediction;
    meta["num_clusters"] is then the run's K, meta["model_num_clusters"] the model's."""

    run_dir: Path
    config: RunConfig
    method: Method
    meta: dict[str, Any]
    device: torch.device
    cut: Any = None  # cluster.cut.Cut | None

    @property
    def eval_transform(self) -> EvalTransform:
        return evaluation_transform(self.config, self.method)

    @property
    def frozen(self) -> bool:
        """True when the encoder is frozen: its features come from the feature cache."""
        return not self.method.encoder.trainable

    def _inputs(self, images: ImageSet, progress: bool) -> ImageSet | torch.Tensor:
        """What the method reads: the images, or a frozen encoder's cached features [N, D]."""
        if not self.frozen:
            return images
        from deepclust.engine.frozen import clean_features

        amp = autocast_dtype(self.config, self.device)
        return clean_features(self.method.encoder, images, self.config, self.device, amp, progress)

    @torch.no_grad()
    def predict_proba(
        self, images: ImageSet, batch_size: int | None = None, progress: bool = True
    ) -> torch.Tensor:
        """uint8 images of the run's size -> cluster probabilities [N,K] (CPU)."""
        if images.image_size != (self.meta["image_size"],) * 2:
            raise DeepclustError(
                f"images are {images.image_size[0]}x{images.image_size[1]} but this run was trained on "
                f"{self.meta['image_size']} px images."
            )
        self.method.eval()
        inputs = self._inputs(images, progress)
        probs = run_batched(
            self.method.predict_proba,
            inputs,
            self.eval_transform,
            self.device,
            batch_size or self.config.train.eval_batch_size,
            autocast_dtype(self.config, self.device),
        ).cpu()
        return probs if self.cut is None else self._apply_cut(probs, images, inputs, progress)

    def _apply_cut(
        self, probs: torch.Tensor, images: ImageSet, inputs: Any, progress: bool
    ) -> torch.Tensor:
        """The trained model's probabilities [N, K_model] -> the recut run's [N, K]."""
        from deepclust.cluster.cut import unit_rows

        feats = None
        if self.cut.needs_features:
            raw = (
                inputs
                if isinstance(inputs, torch.Tensor)
                else self.features(images, None, progress)
            )
            feats = unit_rows(raw.float().numpy())
        if self.cut.from_k != probs.shape[1] or not self.cut.fits(feats):
            raise wrong_field(
                self.run_dir / CUT_FILE, "from_k or centres", self.cut.from_k,
                f"{probs.shape[1]} clusters and centres of the encoder's feature size",
            )  # fmt: skip
        return torch.from_numpy(self.cut.apply(probs.numpy(), feats)).float()

    @torch.no_grad()
    def features(
        self, images: ImageSet, batch_size: int | None = None, progress: bool = True
    ) -> torch.Tensor:
        """uint8 images of the run's size -> encoder features [N,D] (CPU, float32)."""
        self.method.eval()
        inputs = self._inputs(images, progress)
        if isinstance(inputs, torch.Tensor):
            return inputs.float().cpu()
        return run_batched(
            self.method.features,
            inputs,
            self.eval_transform,
            self.device,
            batch_size or self.config.train.eval_batch_size,
            autocast_dtype(self.config, self.device),
        ).cpu()

    @property
    def default_split(self) -> str:
        """The evaluation split of the run's protocol: 'test' (train->test) or 'all'."""
        return "test" if self.config.data.protocol == "train-test" else "all"

    def load_split(self, split: str | None = None) -> ImageSet:
        """A split of the run's dataset at the run's image size (default: its evaluation split)."""
        return eval_split(self.config, split or self.default_split, self.meta["image_size"])


def load_run(run_dir: str | Path, device: str = "auto", data_dir: str | None = None) -> LoadedRun:
    """Rebuild a trained method from its run folder (weights_only checkpoint).

    data_dir: where the run's dataset is now, when it moved since training.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder '{run_dir}' does not exist.")
    state = ckpt.load_latest(run_dir)
    cfg = from_dict(RunConfig, state["config"])
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)
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
    cut = read_cut(run_dir)
    if cut is not None:
        meta = {**meta, "model_num_clusters": meta["num_clusters"], "num_clusters": cut.to_k}
    return LoadedRun(run_dir, cfg, method.to(dev).eval(), meta, dev, cut)


CUT_FILE = "cut.json"


def read_cut(run_dir: Path) -> Any:
    """A recut run's cluster.cut.Cut (cut.json), or None for a trained run."""
    from deepclust.cluster.cut import Cut

    path = run_dir / CUT_FILE
    if not path.is_file():
        return None
    data = read_run_json(path)
    try:
        return Cut.from_dict(data)
    except (KeyError, TypeError, ValueError, IndexError):
        raise wrong_field(path, "steps", data, "a list of merge / split steps") from None


def eval_split(cfg: RunConfig, split: str, image_size: int) -> ImageSet:
    kwargs = dict(image_size=image_size, download=False, bad_images=cfg.data.bad_images)
    if split == "all":
        from deepclust.data.datasets import dataset_info

        splits = [s for s in cfg.data.all_splits if s in dataset_info(cfg.dataset).splits]
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


def protocol_label(
    run_protocol: str, split: str, all_splits: tuple[str, ...] = ("train", "test")
) -> str:
    """How a score was obtained: 'train->test' (held out), 'train+test', or an in-sample variant.

    all_splits: what protocol 'all' joined (data.all_splits); a run on [train] alone never
    saw the test split, so its test score is held out.
    """
    if run_protocol == "all" and tuple(all_splits) == ("train",):
        return {"all": "train", "train": "train", "test": "train->test"}[split]
    if run_protocol == "train-test":
        return {
            "test": "train->test",
            "train": "train->train (in-sample)",
            "all": "train->train+test",
        }[split]
    return {
        "all": "train+test",
        "train": "train+test->train (in-sample)",
        "test": "train+test->test (in-sample)",
    }[split]


def read_cluster_names(run_dir: str | Path, num_clusters: int) -> dict[int, str]:
    """cluster_names.json: a list of K names or {cluster id: name}; {} when absent.

    A name may be a list of words (best first, as SIC writes them): they are joined by ', '.
    RunFileError names the file and the entry that is not what deepclust writes.
    """
    from deepclust.engine.runfolder import read_run_json, wrong_field

    path = Path(run_dir) / "cluster_names.json"
    raw = read_run_json(path)
    if raw is None:
        return {}
    if not isinstance(raw, list | dict):
        raise wrong_field(path, "the file", raw, "a list or an object of cluster names")
    items = enumerate(raw) if isinstance(raw, list) else raw.items()
    names = {}
    for key, value in items:
        if not re.fullmatch(r"[0-9]{1,9}", str(key)):
            raise wrong_field(path, "a key", key, "a cluster id (a whole number)")
        if isinstance(value, dict) or value is None:
            raise wrong_field(path, f"cluster {key}", value, "a name or a list of words")
        if 0 <= int(key) < num_clusters:
            names[int(key)] = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return names


# summary.json fields that are read back: what each must be, and its words for the error
SUMMARY_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "epochs": (int, "a whole number"),
    "n_fit": (int, "a whole number"),
    "n_eval": (int, "a whole number"),
    "num_clusters": (int, "a whole number"),
    "seed": (int, "a whole number"),
    "wall_time_s": ((int, float), "a number"),
    "warnings": (list, "a list of lines"),
    "metrics": ((dict, type(None)), "an object of scores"),
}
METRIC_FIELDS = ("acc", "nmi", "ari", "purity", "n")


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json ({} when absent), its fields checked: RunFileError names a wrong one."""
    from deepclust.engine.runfolder import read_run_json, wrong_field

    path = Path(run_dir) / "summary.json"
    summary = read_run_json(path)
    if summary is None:
        return {}
    if not isinstance(summary, dict):
        raise wrong_field(path, "the file", summary, "an object")
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    fields = [(k, summary.get(k), *SUMMARY_FIELDS[k]) for k in SUMMARY_FIELDS if k in summary]
    fields += [
        (f"metrics.{k}", metrics[k], (int, float), "a number")
        for k in METRIC_FIELDS
        if k in metrics
    ]
    for key, value, kind, want in fields:
        if not isinstance(value, kind) or isinstance(value, bool):
            raise wrong_field(path, key, value, want)
    if not all(isinstance(w, str) for w in summary.get("warnings", [])):
        raise wrong_field(path, "warnings", summary["warnings"], "a list of lines")
    return summary


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
    return out


def seed_dirs(run_dir: str | Path) -> list[Path]:
    """The seed-<s>/ run folders under a `--seeds` run folder, by seed."""
    found = [p for p in Path(run_dir).glob("seed-*") if (p / "config.yaml").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))
