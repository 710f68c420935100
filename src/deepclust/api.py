"""The Python front door: train, evaluate and predict. The CLI is a thin layer over this.

from deepclust import api
cfg = api.make_config("kmeans", "digits", overrides={"data.protocol": "all"})
result = api.train(cfg, out="runs/digits")
print(api.evaluate("runs/digits")["acc"])
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
    evaluation_transform,
    resolve_device,
)
from deepclust.errors import CheckpointError, ConfigError, DeepclustError
from deepclust.evaluation.metrics import score
from deepclust.evaluation.predictions import (
    prediction_rows,
    read_predictions_csv,
    write_predictions_csv,
)
from deepclust.methods import Method


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
        return run_batched(
            self.method.predict_proba,
            self._inputs(images, progress),
            self.eval_transform,
            self.device,
            batch_size or self.config.train.eval_batch_size,
            autocast_dtype(self.config, self.device),
        ).cpu()

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
        return _eval_split(self.config, split or self.default_split, self.meta["image_size"])


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
    return LoadedRun(run_dir, cfg, method.to(dev).eval(), meta, dev)


def _eval_split(cfg: RunConfig, split: str, image_size: int) -> ImageSet:
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


def evaluate(
    run_dir: str | Path | LoadedRun,
    split: str | None = None,
    device: str = "auto",
    data: ImageSet | None = None,
) -> dict[str, Any]:
    """Score a run on `split` ('test', 'train' or 'all' = train+test; default: the run's protocol).

    The result says how the number was obtained: 'protocol' is 'train->test' (fitted on
    train, scored on the held-out test split), 'train+test' (fitted and scored on both),
    or an in-sample variant; 'held_out' is True only for train->test.
    """
    run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir, device)
    cfg = run.config
    split = split or run.default_split
    if split not in ("test", "train", "all"):
        raise ConfigError(f"--split must be test, train or all; got '{split}'.")
    data = data if data is not None else run.load_split(split)
    if not data.has_labels:
        raise DeepclustError(
            f"split '{split}' of '{cfg.dataset}' has no labels to evaluate against."
        )
    probs = run.predict_proba(data)
    scores = score(
        data.labels.numpy(), probs.argmax(1).numpy(), num_clusters=probs.shape[1]
    ).as_dict()
    protocol = protocol_label(cfg.data.protocol, split, cfg.data.all_splits)
    result = {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "split": split,
        "protocol": protocol,
        "held_out": protocol == "train->test",
        "encoder": cfg.encoder.name,
        **scores,
    }
    names = read_cluster_names(run.run_dir, probs.shape[1])
    if names:
        result["cluster_names"] = [names.get(c, "") for c in range(probs.shape[1])]
    return result


def evaluate_protocols(
    run_dir: str | Path | LoadedRun, device: str = "auto"
) -> list[dict[str, Any]]:
    """Both views of a run: its own protocol's split and the other side of the fit.

    train->test runs: the test split (held out) and the train split (in-sample, the fit
    distribution), so the train->test shift is visible. train+test runs: train+test and
    its test part (both in-sample; no held-out number exists for such a run).
    """
    run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir, device)
    splits = ["test", "train"] if run.config.data.protocol == "train-test" else ["all", "test"]
    results = []
    for split in splits:
        try:
            data = run.load_split(split)
        except DeepclustError:
            if split == splits[0]:
                raise
            continue  # e.g. a single-split dataset: no separate test part
        results.append(evaluate(run, split, data=data))
    return results


def features_path(out: str | Path) -> Path:
    """Where `predict --features` writes the features: next to the CSV, <stem>.features.npy."""
    out = Path(out)
    return out.with_name(out.stem + ".features.npy")


def predict(
    run_dir: str | Path,
    paths: list[str | Path],
    out: str | Path | None = None,
    device: str = "auto",
    bad_images: str = "skip",
    features: bool = False,
) -> list[dict[str, Any]]:
    """Cluster new images (files or folders). Returns rows {index, path, cluster, confidence,
    name, label} (evaluation/predictions.py); writes them as CSV if `out`.

    features=True also writes the encoder features as float32 [N, D] to
    `features_path(out)` (row i = CSV row i), e.g. predictions.csv -> predictions.features.npy.
    """
    if features and out is None:
        raise ConfigError("--features writes next to the CSV: give --out FILE.csv as well.")
    run = load_run(run_dir, device)
    images = load_image_paths(paths, image_size=run.meta["image_size"], bad_images=bad_images)
    probs = run.predict_proba(images)
    names = read_cluster_names(run.run_dir, probs.shape[1])  # e.g. SIC's nearest nouns
    rows = prediction_rows(probs, images.paths, None, names)
    if out is not None:
        write_predictions_csv(out, rows)
        if features:
            np.save(features_path(out), run.features(images).numpy().astype(np.float32))
    return rows


# --------------------------------------------------------------------------- seeds


@dataclass
class SeedsResult:
    run_dir: Path
    runs: list[RunResult]
    summary: dict[str, Any]  # what seeds.json holds


def _with_seed(cfg: RunConfig, seed: int) -> RunConfig:
    from deepclust.config import set_dotted

    data = cfg.to_dict()
    set_dotted(data, "train.seed", seed)
    return from_dict(RunConfig, data)


def seed_dirs(run_dir: str | Path) -> list[Path]:
    """The seed-<s>/ run folders under a `--seeds` run folder, by seed."""
    found = [p for p in Path(run_dir).glob("seed-*") if (p / "config.yaml").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def train_seeds(
    cfg: RunConfig,
    seeds: int,
    out: str | Path | None = None,
    resume: bool = False,
    criterion: str | None = None,
) -> SeedsResult:
    """Train seeds cfg.train.seed .. +seeds-1 into out/seed-<s>/ and write out/seeds.json.

    seeds.json: per-run ACC/NMI/ARI, mean, sample std, best (by ACC) and per-metric max
    (deepclust.evaluation.seeds), and the run a label-free criterion picks with its gap to
    the best (deepclust.evaluation.selection; also written in full to out/selection.json).
    With resume, finished seeds are kept and unfinished ones continue from their checkpoint.
    """
    from deepclust.evaluation import seeds as seeds_mod

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1; got {seeds}.")
    root = Path(out) if out is not None else default_run_dir(cfg)
    first = cfg.train.seed
    results = []
    for seed in range(first, first + seeds):
        run_cfg = _with_seed(cfg, seed)
        run_dir = root / f"seed-{seed}"
        summary_file = run_dir / "summary.json"
        if resume and summary_file.is_file():
            done = json.loads(summary_file.read_text())
            if done.get("epochs") == run_cfg.train.epochs:
                results.append(RunResult(run_dir, done))
                continue
        has_ckpt = (run_dir / ckpt.LAST).exists() or (run_dir / ckpt.PREVIOUS).exists()
        results.append(Trainer(run_cfg, run_dir, resume=resume and has_ckpt).fit())
    rows = [
        {
            "seed": r.summary["seed"],
            "run_dir": str(r.run_dir),
            **{k: (r.summary.get("metrics") or {}).get(k) for k in ("acc", "nmi", "ari")},
        }
        for r in results
    ]
    s0 = results[0].summary
    summary: dict[str, Any] = {
        "method": s0["method"],
        "dataset": s0["dataset"],
        "protocol": protocol_label(
            s0["protocol"],
            "test" if s0["protocol"] == "train-test" else "all",
            cfg.data.all_splits,
        ),
        "eval_split": s0["eval_split"],
        "encoder": s0["encoder"],
        "epochs": s0["epochs"],
        "device": s0["device"],
        "seeds": [r["seed"] for r in rows],
        "runs": rows,
        **seeds_mod.aggregate(rows),
        "std_note": "sample standard deviation (n - 1)",
    }
    if seeds >= 2:
        sel = select([r.run_dir for r in results], criterion=criterion, out=root / "selection.json")
        pick = next(r for r in rows if r["run_dir"] == sel["pick_run_dir"])
        summary["label_free_pick"] = {
            "criterion": sel["criterion"],
            "seed": pick["seed"],
            **{k: pick[k] for k in ("acc", "nmi", "ari")},
        }
        if "best" in summary and pick["acc"] is not None:
            summary["label_free_pick"]["gap_acc"] = summary["best"]["acc"] - pick["acc"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "seeds.json").write_text(json.dumps(summary, indent=2))
    return SeedsResult(root, results, summary)


# --------------------------------------------------------------------------- selection


def expand_run_dirs(run_dirs: list[str | Path]) -> list[Path]:
    """Run folders as given; a folder without config.yaml stands for its run sub-folders."""
    out: list[Path] = []
    for d in map(Path, run_dirs):
        if (d / "config.yaml").is_file():
            out.append(d)
            continue
        subs = seed_dirs(d) or sorted(p.parent for p in d.glob("*/config.yaml"))
        if not subs:
            raise CheckpointError(
                f"'{d}' is not a deepclust run folder (no config.yaml) and holds none."
            )
        out += subs
    return out


def label_free_scores(
    runs: list[LoadedRun],
    images: ImageSet,
    fit_sample: Callable[[LoadedRun], tuple[ImageSet, torch.Tensor]] | None = None,
    max_loss_batches: int = 4,
) -> list[dict[str, Any]]:
    """Every label-free criterion for every run, on `images` (their labels are dropped first).

    The loss is computed on `images` as held-out images; where a method's per-sample state
    needs fit-set indices, on fit_sample(run) = (fit images, their fit-set indices).
    """
    from deepclust.evaluation import selection as sel

    images = sel.without_labels(images)
    view1, view2 = sel.augmented_pair(images)
    sel.remember_frozen_outputs([run.method for run in runs])  # one pass per shared frozen encoder
    from deepclust.progress import bar

    cands = []
    for i, run in enumerate(bar(runs, desc="scoring runs without labels", unit="run")):
        clusters = run.predict_proba(images).argmax(1).numpy()
        views = (
            run.predict_proba(view1).argmax(1).numpy(),
            run.predict_proba(view2).argmax(1).numpy(),
        )
        feats = run.features(images).numpy()
        loss, where = _selection_loss(run, images, fit_sample, max_loss_batches)
        cands.append(
            sel.Candidate(
                name=str(run.run_dir) if run.run_dir else f"run {i}",
                clusters=clusters,
                num_clusters=run.meta["num_clusters"],
                view_clusters=views,
                features=feats,
                loss=loss,
                loss_images=where,
            )
        )
    return sel.score_candidates(cands)


def _selection_loss(
    run: LoadedRun,
    images: ImageSet,
    fit_sample: Callable[[LoadedRun], tuple[ImageSet, torch.Tensor]] | None,
    max_batches: int,
) -> tuple[float | None, str]:
    """(the method's objective, which images it was computed on); (None, why) if it cannot be."""
    from deepclust.evaluation.selection import method_loss, without_labels

    if run.method.view_spec() is None:
        return None, "no gradient training"
    kw: dict[str, Any] = dict(
        device=run.device,
        batch_size=run.config.train.batch_size,
        max_batches=max_batches,
        epoch=run.config.train.epochs,
        autocast_dtype=autocast_dtype(run.config, run.device),
    )
    frozen = not run.method.encoder.trainable
    views = ", feature views (clean copies; neighbours among these images)" if frozen else ""

    def frozen_features(data: ImageSet) -> dict[str, Any]:
        """The heads of a frozen encoder trained on feature views: score them on those."""
        if not frozen:
            return {}
        from deepclust.engine.frozen import FrozenFeatures

        feats = run.features(data).to(run.device)
        return {
            "features": FrozenFeatures.of_copies(feats[None], feats, run.config.encoder),
            "feature_noise": run.config.encoder.feature_noise,
        }

    if run.config.data.protocol == "train-test":
        try:
            loss = method_loss(run.method, images, **kw, **frozen_features(images))
            return loss, f"held-out {images.name}{views}"
        except (ValueError, RuntimeError, IndexError, TypeError, KeyError):
            pass  # per-sample state (memory bank, pseudo-labels) needs fit-set indices
    if fit_sample is None:
        return None, "needs fit-set images"
    fit, index = fit_sample(run)
    where = "fit images with their indices" + (
        " (train+test protocol: nothing is held out)" if run.config.data.protocol == "all" else ""
    )
    loss = method_loss(run.method, without_labels(fit), indices=index, **kw, **frozen_features(fit))
    return loss, where + views


def select(
    run_dirs: list[str | Path],
    criterion: str | None = None,
    max_images: int | None = 2000,
    device: str = "auto",
    out: str | Path | None = None,
    with_labels: bool = True,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Rank runs of one dataset without labels; optionally compare with the best-by-labels.

    Every criterion is computed on the same (sub-sampled, label-stripped) evaluation
    images; `criterion` (default: consensus for >= 3 runs, else views) orders the runs.
    With labels, each run's own scores (summary.json, else evaluate) give the best run,
    and for every criterion the gap between its pick and that best (JSON written to `out`).
    """
    from deepclust.evaluation import selection as sel

    dirs = expand_run_dirs(run_dirs)
    criterion = criterion or sel.default_criterion(len(dirs))
    if criterion not in sel.CRITERIA:
        raise ConfigError(
            f"unknown criterion '{criterion}'; choose from {', '.join(sel.CRITERIA)}."
        )
    runs = [load_run(d, device, data_dir) for d in dirs]
    keys = {
        (r.config.dataset, r.config.data.data_dir, r.meta["image_size"], r.default_split)
        for r in runs
    }
    if len(keys) > 1:
        raise ConfigError(
            "select compares runs on the same images: these runs differ in dataset, data folder, "
            f"image size or protocol ({sorted(map(str, keys))})."
        )
    split = runs[0].default_split
    full = runs[0].load_split(split)
    index = sel.subsample_index(len(full), max_images)
    images = full if index is None else full.subset(index)
    fit_cache: dict[str, tuple[ImageSet, torch.Tensor]] = {}

    def fit_sample(run: LoadedRun) -> tuple[ImageSet, torch.Tensor]:
        """Fit images with their fit-set indices (the train split leads the fit set)."""
        if "fit" not in fit_cache:
            if run.config.data.protocol == "all":  # the evaluation set leads the fit set
                fit_cache["fit"] = (images, index if index is not None else torch.arange(len(full)))
            else:
                train = run.load_split("train")
                idx = sel.subsample_index(len(train), max_images)
                idx = idx if idx is not None else torch.arange(len(train))
                fit_cache["fit"] = (train.subset(idx), idx)
        return fit_cache["fit"]

    rows = label_free_scores(runs, images, fit_sample)
    order = sel.rank(rows, criterion)
    result: dict[str, Any] = {
        "criterion": criterion,
        "higher_is_better": sel.CRITERIA[criterion],
        "images": {"split": full.name, "n": len(images), "of": len(full)},
        "runs": [],
        "pick": rows[order[0]]["name"],
        "pick_run_dir": str(dirs[order[0]]),
        "note": (
            "Runs are ranked without labels. Only finished runs are compared (the engine keeps "
            "last.pt/previous.pt, not one checkpoint per epoch), so selection is among runs: "
            "seeds or hyper-parameter variants."
        ),
    }
    metrics: list[dict[str, Any] | None] = []
    for d, run in zip(dirs, runs, strict=True):
        m = None
        if with_labels:
            summary = d / "summary.json"
            if summary.is_file():
                m = json.loads(summary.read_text()).get("metrics")
            if m is None and full.has_labels:
                m = evaluate(run, split, data=full)
        metrics.append(m)
    for rank_pos, i in enumerate(order, start=1):
        entry = {"rank": rank_pos, "run_dir": str(dirs[i]), "seed": runs[i].config.train.seed}
        entry.update({k: v for k, v in rows[i].items() if k != "name"})
        if metrics[i]:
            entry["labels"] = {k: metrics[i][k] for k in ("acc", "nmi", "ari") if k in metrics[i]}  # type: ignore[index]
        result["runs"].append(entry)
    if with_labels:
        cmp = sel.compare_with_labels(rows, metrics)
        if cmp is not None:
            for part in [cmp["best_by_labels"], cmp["worst_by_labels"], *cmp["criteria"].values()]:
                for key in ("name", "pick"):
                    if key in part:
                        part[key] = str(part[key])
            result["label_free_vs_labels"] = cmp
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
        result["written_to"] = str(out)
    return result


# --------------------------------------------------------------------------- shift


def shift(
    run_dir: str | Path,
    corruptions: list[str] | tuple[str, ...] | None = None,
    severities: tuple[int, ...] | None = None,
    seed: int = 0,
    device: str = "auto",
    max_images: int | None = None,
    write: bool = True,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Score a run on corrupted copies of its evaluation split (CIFAR-10-C recipe).

    Returns (and writes to RUN_DIR/shift.json) the clean scores, the scores on the train
    and test splits (the train->test shift), and ACC/NMI/ARI per corruption and severity.
    """
    from deepclust.evaluation import selection as sel
    from deepclust.evaluation import shift as sh

    try:
        names = sh.parse_corruptions(list(corruptions) if corruptions else None)
        levels = tuple(severities) if severities else sh.SEVERITIES
        for level in levels:
            sh.check_corruption(names[0], level)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    run = load_run(run_dir, device, data_dir)
    split = run.default_split
    full = run.load_split(split)
    if not full.has_labels:
        raise DeepclustError(f"split '{split}' of '{run.config.dataset}' has no labels to score.")
    index = sel.subsample_index(len(full), max_images)
    data = full if index is None else full.subset(index)
    k = run.meta["num_clusters"]

    def scores(images: ImageSet) -> dict[str, Any]:
        probs = run.predict_proba(images)
        return score(data.labels.numpy(), probs.argmax(1).numpy(), num_clusters=k).as_dict()

    clean = evaluate(run, split, data=data)
    splits = []  # the train->test shift: scores on the train and the test split
    parts: dict[str, ImageSet] = {}
    for other in ("train", "test"):
        try:
            parts[other] = data if other == split else run.load_split(other)
        except DeepclustError:
            break  # a single-split dataset: no train/test breakdown
    if len(parts) == 2:
        for other, part in parts.items():
            if other == split:
                splits.append(clean)
                continue
            idx = sel.subsample_index(len(part), max_images)
            splits.append(evaluate(run, other, data=part if idx is None else part.subset(idx)))
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name in names:
        table[name] = {}
        for level in levels:
            shifted = ImageSet(sh.corrupt(data.images, name, level, seed), data.labels)
            table[name][str(level)] = scores(shifted)
    mean_acc = {n: float(np.mean([v["acc"] for v in per.values()])) for n, per in table.items()}
    result: dict[str, Any] = {
        "method": run.config.method,
        "dataset": run.config.dataset,
        "encoder": run.config.encoder.name,
        "protocol": clean["protocol"],
        "eval_split": data.name,
        "n": len(data),
        "of": len(full),
        "seed": seed,
        "recipe": "corruption parameters of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019)",
        "severities": list(levels),
        "clean": clean,
        "splits": splits,
        "corruptions": table,
        "mean_acc": mean_acc,
        "mean_corrupted_acc": float(np.mean(list(mean_acc.values()))),
    }
    result["relative_acc"] = (
        result["mean_corrupted_acc"] / clean["acc"] if clean["acc"] > 0 else None
    )
    fit = next((s for s in splits if s["split"] == "train"), None)
    test = next((s for s in splits if s["split"] == "test"), None)
    if fit is not None and test is not None:
        result["train_minus_test_acc"] = fit["acc"] - test["acc"]
    if write:
        (Path(run_dir) / "shift.json").write_text(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------- report


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
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


def read_cluster_names(run_dir: str | Path, num_clusters: int) -> dict[int, str]:
    """cluster_names.json: a list of K names or {cluster id: name}; {} when absent.

    A name may be a list of words (best first, as SIC writes them): they are joined by ', '.
    """
    path = Path(run_dir) / "cluster_names.json"
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    items = enumerate(raw) if isinstance(raw, list) else ((int(k), v) for k, v in raw.items())
    return {
        int(k): ", ".join(map(str, v)) if isinstance(v, list) else str(v)
        for k, v in items
        if 0 <= int(k) < num_clusters
    }


def _stored_predictions(run_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(clusters, confidence) from predictions.csv when it covers the n evaluation images."""
    path = run_dir / "predictions.csv"
    if not path.is_file():
        return None
    rows = read_predictions_csv(path)
    if len(rows) != n:
        return None
    return (
        np.array([int(r["cluster"]) for r in rows]),
        np.array([float(r["confidence"]) for r in rows]),
    )


def report(
    run_dir: str | Path,
    out: str | Path | None = None,
    device: str = "auto",
    embedding: str = "pca",
    per_cluster: int = 12,
    max_points: int = 2000,
    protocols: str = "run",
    data_dir: str | None = None,
) -> Path:
    """Write the run's self-contained HTML report (default RUN_DIR/report.html); returns its path.

    embedding: 'pca' or 'tsne' (scikit-learn, on at most max_points images).
    protocols: 'run' (the run's own evaluation) or 'both' (also the other split, see
    evaluate_protocols).
    """
    from deepclust.choose_k import read_estimate
    from deepclust.evaluation import report as rep
    from deepclust.evaluation import selection as sel

    if embedding not in ("pca", "tsne"):
        raise ConfigError(f"--embedding must be pca or tsne; got '{embedding}'.")
    run_dir = Path(run_dir)
    run = load_run(run_dir, device, data_dir)
    data = run.load_split()
    k = run.meta["num_clusters"]
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    stored = _stored_predictions(run_dir, len(data))
    if stored is None:
        probs = run.predict_proba(data)
        conf, cl = probs.max(1)
        stored = (cl.numpy(), conf.numpy())
    clusters, confidence = stored
    rows: list[dict[str, Any]] = []
    if data.has_labels:
        own = summary.get("metrics") or evaluate(run, data=data)
        rows.append(
            {
                "label": "the run's evaluation",
                **own,
                "protocol": protocol_label(
                    run.config.data.protocol,
                    run.default_split,
                    run.config.data.all_splits,
                ),
                "split": run.default_split,
            }
        )
        if protocols == "both":
            other = "train" if run.config.data.protocol == "train-test" else "test"
            with contextlib.suppress(DeepclustError):  # a single-split dataset: nothing more
                rows.append({"label": "the other split", **evaluate(run, other)})
    index = sel.subsample_index(len(data), max_points)
    index = torch.arange(len(data)) if index is None else index
    # a frozen run's cache holds the whole split's features (keyed by its images): index them;
    # a trained encoder runs on the sampled images only
    feats = run.features(data)[index] if run.frozen else run.features(data.subset(index))
    feats = feats.numpy().astype(np.float64)
    points = _embed(feats, embedding)
    records = _read_jsonl(run_dir / "metrics.jsonl")
    shift_file = run_dir / "shift.json"
    info = {
        "run_dir": str(run_dir),
        "method": run.config.method,
        "dataset": run.config.dataset,
        "data_dir": run.config.data.data_dir,
        "protocol": protocol_label(
            run.config.data.protocol,
            run.default_split,
            run.config.data.all_splits,
        ),
        "fit_split": summary.get("fit_split"),
        "eval_split": summary.get("eval_split", data.name),
        "encoder": run.config.encoder.name,
        "epochs": summary.get("epochs", run.config.train.epochs),
        "seed": run.config.train.seed,
        "num_clusters": k,
        "n_images": f"{summary.get('n_fit', '?'):,} / {len(data):,}"
        if isinstance(summary.get("n_fit"), int)
        else f"? / {len(data):,}",
        "device": summary.get("device", run.meta.get("device")),
        "wall_time": f"{summary['wall_time_s']:.1f} s" if "wall_time_s" in summary else None,
        "torch": summary.get("torch"),
    }
    page = rep.render_html(
        rep.ReportData(
            info=info,
            metric_rows=rows,
            images=data.images,
            clusters=clusters,
            confidence=confidence,
            num_clusters=k,
            labels=data.labels.numpy() if data.has_labels else None,
            class_names=list(data.class_names or run.meta.get("class_names", [])),
            cluster_names=read_cluster_names(run_dir, k),
            embedding=points,
            embedding_index=index.numpy(),
            embedding_method="t-SNE" if embedding == "tsne" else "PCA",
            train_records=[r for r in records if r.get("event") == "train"],
            eval_records=[r for r in records if r.get("event") == "eval"],
            shift=json.loads(shift_file.read_text()) if shift_file.is_file() else None,
            per_cluster=per_cluster,
            warnings=list(summary.get("warnings", [])),
            k_estimate=read_estimate(run_dir),
            paths=list(data.paths) if data.paths else None,
        )
    )
    target = Path(out) if out is not None else run_dir / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def _embed(features: np.ndarray, method: str) -> np.ndarray:
    """[M, D] -> [M, 2]: PCA, or t-SNE on the first 50 principal components."""
    from sklearn.decomposition import PCA

    if len(features) < 3:
        return np.zeros((len(features), 2))
    dims = min(50 if method == "tsne" else 2, features.shape[1], len(features))
    reduced = PCA(n_components=dims, random_state=0).fit_transform(features)
    if method == "pca":
        return reduced if reduced.shape[1] == 2 else np.pad(reduced, ((0, 0), (0, 1)))
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(reduced)


def cluster(photos: str | Path, k: int, out: str | Path | None = None, **options: Any) -> Any:
    """`deepclust cluster`: every image under `photos` into k groups with the default frozen
    recipe; returns a photo_folder.ClusterResult (run folder, summary, sizes, report).
    options: method, image_size, seed, device, export, copy, report, overrides."""
    from deepclust.photo_folder import cluster_folder

    return cluster_folder(photos, k, out, **options)


def estimate_k(
    cfg: RunConfig, k_range: tuple[int, int] | None = None, estimator: str | None = None
) -> Any:
    """The number of clusters for `cfg`'s fit set, chosen without labels from its frozen
    encoder's cached features: a cluster.k_estimation.KEstimate (k, curve over K, ...)."""
    from deepclust.choose_k import estimate_for_config

    return estimate_for_config(cfg, k_range, estimator, cfg.train.device)
