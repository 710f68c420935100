"""Two gloo processes with half the batch each train exactly like one process on the whole batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import toy_method  # registers the test-only method "toy"
from deepclust import api
from dist_harness import run_in_processes

STEPS = {
    "train.epochs": 2,
    "train.max_steps_per_epoch": 3,
    "train.batch_size": 64,
    "train.progress": False,
    "train.eval_every": 1,
}
# SGD: Adam divides by sqrt(v) and blows up float round-off on near-zero gradients.
TOY = {"data.protocol": "all", "train.optimizer.name": "sgd", "train.optimizer.lr": 0.5}
CASES = {
    "toy-images": (
        "toy",
        "digits",
        {**TOY, "encoder.name": "small_cnn"},
    ),  # BatchNorm -> SyncBatchNorm
    "toy-frozen": ("toy", "digits", {**TOY, "encoder.name": "pixels"}),  # feature views
    "digpro": (
        "digpro",
        "digits",
        {
            "encoder.name": "pixels",
            "data.protocol": "all",
            "train.optimizer.lr": 0.01,
            "params.warmup_epochs": 1,
            "params.crop_size": 8,
        },
    ),
}


def _train(rank: int, method: str, dataset: str, overrides: dict, out: str) -> dict:
    cfg = api.make_config(method, dataset, overrides={**overrides, **STEPS})
    api.train(cfg, out=out)
    run = Path(out)
    return {
        "model": torch.load(run / "last.pt", weights_only=True)["model"],
        "log": [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()],
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_match_one(case, tmp_path):
    method, dataset, overrides = CASES[case]
    assert toy_method.Toy.name == "toy"
    one = _train(0, method, dataset, overrides, str(tmp_path / "one"))
    two = run_in_processes(_train, 2, method, dataset, overrides, str(tmp_path / "two"))[0]
    for key, value in one["model"].items():
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


def test_resume_a_two_process_run_in_one_process(tmp_path):
    method, dataset, overrides = CASES["toy-images"]
    run_in_processes(_train, 2, method, dataset, overrides, str(tmp_path / "run"))
    cfg = api.resume_config(tmp_path / "run", overrides={"train.epochs": 3})
    assert api.train(cfg, out=tmp_path / "run", resume=True).summary["epochs"] == 3
