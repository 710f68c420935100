"""Two gloo processes with half the batch each train exactly like one process on the whole batch.

Every case in CASES is trained for a few steps by one process and by two (one spawn runs all
the two-process trainings, to keep the suite fast); losses, evaluations and every tensor of
the final checkpoint (parameters, BatchNorm statistics, memory banks, centres) must match.
To add a method, add a case: (method, dataset, overrides), small enough to take seconds;
dataset "imagefolder" is conftest's noisy separable images, "stl10" a tiny random STL-10.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import toy_method  # registers the test-only method "toy"
from conftest import write_stl10
from deepclust import api
from dist_harness import run_in_processes

STEPS = {
    "train.epochs": 2,
    "train.max_steps_per_epoch": 3,
    "train.batch_size": 64,
    "train.progress": False,
    "train.eval_every": 1,
}
# SGD everywhere: Adam divides by sqrt(v), so a near-zero gradient element (a bias before a
# BatchNorm, whose true gradient is 0) moves by +-lr on float round-off alone; one process
# with 1 and with 2 threads then differs by ~lr too.
# Convolutional encoders that learn train on noisy images, not digits: a digit's constant
# background puts whole channels at one pre-activation value, and where that value sits
# near 0 round-off switches the ReLU for every background pixel at once (measured: ConCURL,
# one process, 1 vs 2 threads, parameters apart by 1e-4 after 3 steps, 6e-3 after 6).
SGD = {"data.protocol": "all", "train.optimizer.name": "sgd"}
TOY = {**SGD, "train.optimizer.lr": 0.5}
TINY_IMC_SWAV = {
    **SGD,
    "encoder.name": "small_cnn",
    "train.optimizer.lr": 0.05,
    "params.high_res_size": 8,
    "params.low_res_size": 6,
    "params.num_prototypes": 30,
    "params.classifier_hidden": 32,
    # the IMC-SwAV configs turn channels_last on, also on the CPU; oneDNN's NHWC kernels round
    # differently at different batch sizes, so 1 and 2 processes compare contiguous
    "train.channels_last": False,
}
FROZEN_PAIRS = {
    **SGD,
    "encoder.name": "pixels",
    "encoder.neighbours": 5,
    "train.optimizer.lr": 0.05,
    "self_label.batch_size": 64,
    "self_label.threshold": 0.2,  # some confident samples after a few steps
}
CASES: dict[str, tuple[str, str, dict]] = {
    "toy-images": ("toy", "digits", {**TOY, "encoder.name": "small_cnn"}),  # GlobalBatchNorm
    "toy-frozen": ("toy", "digits", {**TOY, "encoder.name": "pixels"}),  # feature views
    "digpro": (
        "digpro",
        "digits",
        {
            **SGD,
            "encoder.name": "pixels",
            "train.optimizer.lr": 0.01,
            "params.warmup_epochs": 1,
            "params.crop_size": 8,
        },
    ),
    "imc-swav": (
        "imc-swav",
        "imagefolder",
        {**TINY_IMC_SWAV, "params.freeze_prototypes_iters": 2},  # prototypes learn from step 2
    ),
    # STL-10's classifier on its own labelled batches: the auxiliary stream, split like the
    # main one (48 labelled among 112 images; each step a batch of 64 and one of 16 labelled)
    "imc-swav-stl10": (
        "imc-swav",
        "stl10",
        {
            **TINY_IMC_SWAV,
            "data.protocol": "train-test",
            "data.include_unlabeled": True,
            "params.classifier_on_labelled_only": True,
            "params.labelled_stream": "auxiliary",  # accumulate runs on one process only
            "params.classifier_batch_size": 16,
        },
    ),
    "concurl": (  # memory bank + NCE, Sinkhorn, random-projection consensus, soft loss
        "concurl",
        "imagefolder",
        {
            **SGD,
            "encoder.name": "small_cnn",
            "train.optimizer.lr": 0.05,
            "params.crop_size": 8,
            "params.nce_negatives": 64,
            "params.num_variations": 4,
            "params.random_projection_dim": 8,
            "params.head_hidden": 32,
            "params.alpha": 1.0,
        },
    ),
    "concurl-variants": (  # in-batch InfoNCE, k-means consensus and k-means prediction
        "concurl",
        "digits",
        {
            **SGD,
            "encoder.name": "pixels",
            "train.optimizer.lr": 0.05,
            "params.crop_size": 8,
            "params.instance_loss": "infonce",
            "params.variation": "kmeans",
            "params.variation_kmeans_n_init": 1,
            "params.predict_with": "kmeans_projection",
            "params.kmeans_n_init": 2,
            "params.head_hidden": 32,
        },
    ),
    "sic": (  # image-only semantic space (pixels have no text tower), global balance entropy
        "sic",
        "digits",
        {
            **SGD,
            "encoder.name": "pixels",
            "train.optimizer.lr": 0.05,
            "params.image_anchors": 40,
            "params.gamma_r": 10,
            "params.xi_a": 3,
            "params.kmeans_n_init": 2,
            "params.neighbours": 5,
            # unit features: default.yaml's raw ones (the paper's CLIP pipeline) are pixel
            # vectors of norm ~50 here, whose losses differ by float round-off above 1e-5
            "params.head_features": "normalised",
            "params.centre_features": "unit",  # raw centres need raw head features
        },
    ),
    "kmeans": ("kmeans", "digits", {"encoder.name": "pixels", "params.n_init": 2}),  # no training
    # heads on neighbour pairs: batch-mean entropy, per-head loss records, best-head choice;
    # then the self-labelling stage (global class weights, summed gradients)
    # (one head, entropy weight 1: a loss near 1, so float sums in another order stay in 1e-5)
    "scan-self-label": (
        "scan",
        "digits",
        {**FROZEN_PAIRS, "self_label.epochs": 2, "params.heads": 1, "params.entropy_weight": 1.0},
    ),
    # EMA teacher, EMA cluster prior of the global batch
    "temi": ("temi", "digits", {**FROZEN_PAIRS, "params.heads": 2, "params.hidden_dim": 16}),
    # inner classifiers trained on the global batch, entropy of the global mean labelling
    # (gamma 1: a loss near 1, so float sums in another order stay within 1e-5)
    "turtle": (
        "turtle",
        "digits",
        {**SGD, "encoder.name": "pixels", "train.optimizer.lr": 0.05, "params.gamma": 1.0},
    ),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def _train(method: str, dataset: str, overrides: dict, out: str, data_dirs: dict) -> dict:
    if dataset in data_dirs:
        overrides = {**overrides, "data.data_dir": data_dirs[dataset]}
    cfg = api.make_config(method, dataset, overrides={**overrides, **STEPS})
    api.train(cfg, out=out)
    run = Path(out)
    return {
        "model": torch.load(run / "last.pt", weights_only=True)["model"],
        "log": [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()],
    }


def _on_rank(rank: int, cases: dict, root: str, data_dirs: dict) -> dict:
    return {name: _train(*case, str(Path(root) / name), data_dirs) for name, case in cases.items()}


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory, separable_images) -> dict[str, str]:
    """Image folders the cases train on, by dataset name."""
    rng = np.random.default_rng(0)
    stl = write_stl10(
        tmp_path_factory.mktemp("stl") / "stl10_binary",
        {s: rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8) for s, n in SPLITS.items()},
        {s: list(rng.integers(1, 11, SPLITS[s])) for s in ("train", "test")},
    )
    return {"imagefolder": str(separable_images), "stl10": str(stl)}


SPLITS = {"train": 48, "test": 20, "unlabeled": 64}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, data_dirs) -> tuple[Path, list[dict]]:
    """Everything 2 processes compute here, in one spawn: (run folders' root, per-rank results)."""
    root = tmp_path_factory.mktemp("two_processes")
    return root, run_in_processes(_on_rank, 2, CASES, str(root), data_dirs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_match_one(case, tmp_path, two_processes, data_dirs):
    assert toy_method.Toy.name == "toy"
    one = _train(*CASES[case], str(tmp_path / "one"), data_dirs)
    two = two_processes[1][0][case]
    assert one["model"].keys() == two["model"].keys()
    for key, value in one["model"].items():
        if not value.is_floating_point():
            assert torch.equal(value, two["model"][key]), key
            continue
        assert torch.allclose(value.float(), two["model"][key].float(), rtol=1e-4, atol=5e-5), (
            key
        )  # float sums in another order
    losses = [(r["epoch"], r["loss"]) for r in one["log"] if r["event"] == "train"]
    losses2 = [(r["epoch"], r["loss"]) for r in two["log"] if r["event"] == "train"]
    assert [e for e, _ in losses] == [e for e, _ in losses2]
    assert all(
        a == pytest.approx(b, abs=1e-5) for (_, a), (_, b) in zip(losses, losses2, strict=True)
    )
    accs = [r["acc"] for r in one["log"] if r["event"] == "eval"]
    assert accs == pytest.approx([r["acc"] for r in two["log"] if r["event"] == "eval"], abs=1e-6)


def test_resume_a_two_process_run_in_one_process(tmp_path, two_processes):
    run = tmp_path / "run"
    shutil.copytree(two_processes[0] / "toy-images", run)
    cfg = api.resume_config(run, overrides={"train.epochs": 3})
    assert api.train(cfg, out=run, resume=True).summary["epochs"] == 3
