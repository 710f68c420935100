"""End-to-end engine tests on scikit-learn's digits with a test-only trainable method."""

import json

import pytest
import torch

import toy_method  # registers the test-only method "toy"
from deepclust import api
from deepclust.errors import CheckpointError
from deepclust.training.trainer import Trainer

TOY = {
    "encoder.name": "pixels",
    "data.protocol": "all",
    "train.epochs": 3,
    "train.batch_size": 256,
    "train.optimizer.name": "adam",
    "train.optimizer.lr": 0.01,
    "train.progress": False,
    "train.schedule.name": "cosine",
    "train.schedule.warmup_iters": 3,
}


def toy_config(**extra):
    return api.make_config("toy", "digits", overrides={**TOY, **extra})


def test_toy_learns_and_logs(tmp_path):
    result = api.train(toy_config(**{"train.epochs": 6}), out=tmp_path / "run")
    acc = result.summary["metrics"]["acc"]
    assert acc > 0.3, acc  # chance is ~0.1 on 10 balanced classes
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if x["event"] == "train"] == list(range(1, 7))
    assert all(x["images_per_s"] > 0 for x in lines if x["event"] == "train")
    evals = [x for x in lines if x["event"] == "eval"]
    assert evals and {"acc", "nmi", "ari", "protocol"} <= evals[-1].keys()
    assert (tmp_path / "run" / "predictions.csv").read_text().count("\n") == 1797 + 1


@pytest.mark.parametrize("encoder", ["small_cnn", "pixels"])  # image views; frozen feature views
def test_resume_after_kill_equals_uninterrupted(tmp_path, monkeypatch, encoder):
    full = api.train(toy_config(**{"encoder.name": encoder}), out=tmp_path / "full")
    ref = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]

    original = toy_method.Toy.training_step

    def dies_in_epoch_3(self, views, info):
        if info.epoch == 2 and info.epoch_step == 3:
            raise KeyboardInterrupt  # the process is killed mid-epoch
        return original(self, views, info)

    monkeypatch.setattr(toy_method.Toy, "training_step", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        api.train(toy_config(**{"encoder.name": encoder}), out=tmp_path / "killed")
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(toy_method.Toy, "training_step", original)

    cfg = api.resume_config(tmp_path / "killed")
    resumed = Trainer(cfg, tmp_path / "killed", resume=True).fit()
    got = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model"]
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    assert resumed.summary["metrics"] == full.summary["metrics"]


def test_resume_guards(tmp_path):
    api.train(toy_config(**{"train.epochs": 1}), out=tmp_path / "run")
    with pytest.raises(CheckpointError, match="--resume to continue"):
        api.train(toy_config(**{"train.epochs": 1}), out=tmp_path / "run")
    with pytest.raises(CheckpointError, match="method 'toy', not 'kmeans'"):
        api.resume_config(tmp_path / "run", method="kmeans")
    changed = toy_config(**{"train.optimizer.lr": 0.5})
    with pytest.raises(CheckpointError, match=r"train\.optimizer\.lr"):
        api.train(changed, out=tmp_path / "run", resume=True)
    longer = api.resume_config(tmp_path / "run", overrides={"train.epochs": 2})
    assert api.train(longer, out=tmp_path / "run", resume=True).summary["epochs"] == 2
    with pytest.raises(CheckpointError, match="no checkpoint"):
        api.train(toy_config(), out=tmp_path / "empty", resume=True)


def test_separable_fixture_is_separable(separable_images, tmp_path):
    cfg = api.make_config(
        "kmeans",
        "imagefolder",
        overrides={
            "data.data_dir": str(separable_images),
            "data.protocol": "all",
            "encoder.name": "pixels",
            "train.progress": False,
        },
    )
    assert api.train(cfg, out=tmp_path / "km").summary["metrics"]["acc"] > 0.9


def test_packaged_config_by_name(tmp_path):
    with pytest.raises(Exception, match="neither a file nor a packaged config"):
        api.make_config("kmeans", "digits", config_file="nonexistent_name")
    assert api.make_config("kmeans", "cifar10", config_file="digits").encoder.name == "pixels"


def test_eval_center_crop_reaches_training_and_loaded_runs(tmp_path):
    from deepclust.errors import ConfigError

    cfg = toy_config(**{"encoder.name": "small_cnn", "train.epochs": 1, "data.eval_center_crop": 6})
    result = api.train(cfg, out=tmp_path / "run")
    assert result.summary["metrics"]["n"] == 1797
    run = api.load_run(tmp_path / "run")
    assert run.eval_transform.center_crop == 6
    assert api.evaluate(tmp_path / "run")["n"] == 1797
    with pytest.raises(ConfigError, match=r"data\.image_size"):  # digits are stored at 8 px
        api.train(
            toy_config(**{"encoder.name": "small_cnn", "data.eval_center_crop": 9}),
            out=tmp_path / "too-big",
        )
    with pytest.raises(ConfigError, match="frozen encoder"):
        api.train(toy_config(**{"data.eval_center_crop": 6}), out=tmp_path / "frozen")


def test_auxiliary_stream_reaches_the_step_with_only_its_rows(tmp_path, monkeypatch):
    """A method's second batch stream: a batch of its size every step, drawn from its rows
    only, each row once before any repeats, and the same in a second run (keyed by seed)."""
    from deepclust.methods.base import AuxiliaryStream

    rows = torch.arange(0, 1797, 7)  # every 7th digit: 257 rows
    fit: dict[str, torch.Tensor] = {}
    seen: list[torch.Tensor] = []
    original = toy_method.Toy.training_step

    def auxiliary_stream(self, ctx):
        fit["features"] = ctx.fit_features  # [N, D]: the frozen 'pixels' features
        return AuxiliaryStream(rows, 32)

    def training_step(self, views, info):
        seen.append(torch.stack(info.auxiliary))  # [views, 32, D]
        return original(self, views, info)

    monkeypatch.setattr(toy_method.Toy, "auxiliary_stream", auxiliary_stream, raising=False)
    monkeypatch.setattr(toy_method.Toy, "training_step", training_step)
    overrides = {"train.epochs": 2, "encoder.feature_noise": 0.0}  # views = the features
    api.train(toy_config(**overrides), out=tmp_path / "a")
    assert len(seen) == 2 * (1797 // 256) and seen[0].shape[:2] == (2, 32)
    features = fit["features"]
    for batch in seen:
        for view in batch:  # each row is the feature of one of the stream's rows
            match = (view[:, None] == features[None]).all(-1)  # [32, N]
            assert bool(match[:, rows].any(1).all())
            assert not bool(match[:, 1:7].any())  # rows outside the stream never appear
    epoch_one = torch.stack([b[0] for b in seen[: 1797 // 256]]).flatten(0, 1)  # [224, D]
    distinct = torch.unique(epoch_one, dim=0)
    assert len(distinct) >= 220  # 224 draws from 257 rows: one cycle, no repeats (bar duplicates)
    first = list(seen)
    seen.clear()
    api.train(toy_config(**overrides), out=tmp_path / "b")
    assert all(torch.equal(a, b) for a, b in zip(first, seen, strict=True))
