"""Two gloo processes with half the batch each train exactly like one process on the whole batch.

Every case in CASES is trained for a few steps by one process and by two (one spawn runs all
the two-process trainings, to keep the suite fast); losses, evaluations and every tensor of
the final checkpoint (parameters, BatchNorm statistics, memory banks, centres) must match.
To add a method, add a case: (method, dataset, overrides), small enough to take seconds;
dataset "imagefolder" is conftest's noisy separable images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import toy_method  # registers the test-only method "toy"
from deepclust import api
from deepclust.encoders import build_encoder
from deepclust.engine.batchnorm import convert_to_global_batchnorm
from deepclust.methods import StepInfo
from deepclust.methods.imc_swav import IMCSwAV, IMCSwAVParams
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
        {
            **SGD,
            "encoder.name": "small_cnn",
            "train.optimizer.lr": 0.05,
            "params.high_res_size": 8,
            "params.low_res_size": 6,
            "params.num_prototypes": 30,
            "params.classifier_hidden": 32,
            "params.freeze_prototypes_iters": 2,  # the prototypes learn from step 2 on
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
        },
    ),
    "kmeans": ("kmeans", "digits", {"encoder.name": "pixels", "params.n_init": 2}),  # no training
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def _train(method: str, dataset: str, overrides: dict, out: str, images: str) -> dict:
    if dataset == "imagefolder":
        overrides = {**overrides, "data.data_dir": images}
    cfg = api.make_config(method, dataset, overrides={**overrides, **STEPS})
    api.train(cfg, out=out)
    run = Path(out)
    return {
        "model": torch.load(run / "last.pt", weights_only=True)["model"],
        "log": [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()],
    }


def _labelled_only_step(rank: int, world: int) -> dict:
    """One IMC-SwAV step whose classifier sees labelled rows only: 1 of 4 on rank 0, 3 of 4
    on rank 1 (8 of the 12 fit-set images carry a label) -> losses and gradients."""
    torch.manual_seed(0)
    params = IMCSwAVParams(
        high_res_size=8,
        low_res_size=6,
        num_prototypes=8,
        projection_hidden=16,
        classifier_hidden=16,
        classifier_on_labelled_only=True,
        freeze_prototypes_iters=0,
        logit_bound=0.05,  # a penalty that is not 0 at initialisation
        logit_weight=1.0,
    )
    method = IMCSwAV(params, build_encoder("small_cnn", 8), num_clusters=3, num_samples=12)
    labels = torch.tensor([0, -1, -1, -1, 1, 2, 0, -1] + [1] * 4)
    method.on_train_start(SimpleNamespace(fit_set=SimpleNamespace(labels=labels)))
    gen = torch.Generator().manual_seed(1)
    views = [
        torch.randn(8, 3, c.size, c.size, generator=gen)
        for c in method.view_spec().crops
        for _ in range(c.count)
    ]
    rows = slice(rank * 8 // world, (rank + 1) * 8 // world)
    if world > 1:
        method = convert_to_global_batchnorm(method)
    losses = method.training_step(
        [v[rows] for v in views], StepInfo(0, 0, 0, 1, 1, torch.arange(8)[rows])
    )
    sum(losses.values()).backward()
    return {
        "losses": {k: float(v.detach()) for k, v in losses.items()},
        "grads": {k: p.grad for k, p in method.named_parameters() if p.grad is not None},
    }


def _on_rank(rank: int, cases: dict, root: str, images: str) -> dict:
    runs = {name: _train(*case, str(Path(root) / name), images) for name, case in cases.items()}
    return {"runs": runs, "labelled_only": _labelled_only_step(rank, 2)}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, separable_images) -> tuple[Path, list[dict]]:
    """Everything 2 processes compute here, in one spawn: (run folders' root, per-rank results)."""
    root = tmp_path_factory.mktemp("two_processes")
    return root, run_in_processes(_on_rank, 2, CASES, str(root), str(separable_images))


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_match_one(case, tmp_path, two_processes, separable_images):
    assert toy_method.Toy.name == "toy"
    one = _train(*CASES[case], str(tmp_path / "one"), str(separable_images))
    two = two_processes[1][0]["runs"][case]
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


def test_imc_swav_labelled_only_rows_on_two_processes_equal_one(two_processes):
    """The processes hold 1 and 3 labelled rows: every loss is still the global-batch one."""
    one = _labelled_only_step(0, 1)
    parts = [r["labelled_only"] for r in two_processes[1]]
    for name, value in one["losses"].items():  # the engine logs the processes' mean
        assert sum(p["losses"][name] for p in parts) / 2 == pytest.approx(value, rel=1e-5), name
    for name, grad in one["grads"].items():  # DDP averages the gradients
        assert torch.allclose(sum(p["grads"][name] for p in parts) / 2, grad, atol=1e-6), name
