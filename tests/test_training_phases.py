"""Trainer.fit's phases, run one by one: each does its one job and leaves what the next needs."""

from __future__ import annotations

import pytest

import toy_method  # noqa: F401  (registers the test-only method "toy")
from deepclust import api
from deepclust.engine.runfolder import RunFolder
from deepclust.errors import ConfigError
from deepclust.training.resume import prepare_run_dir
from deepclust.training.trainer import Trainer

OVERRIDES = {
    "encoder.name": "pixels",
    "data.protocol": "all",
    "train.epochs": 2,
    "train.batch_size": 256,
    "train.max_steps_per_epoch": 3,
    "train.progress": False,
}

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def test_phases_one_by_one(tmp_path):
    trainer = Trainer(api.make_config("toy", "digits", overrides=OVERRIDES), tmp_path / "run")
    with RunFolder(trainer.run_dir, resume=False):
        device, dist = trainer._start()
        assert device.type == "cpu" and dist.world_size == 1
        assert prepare_run_dir(trainer.run_dir, trainer.cfg, False, dist) is None
        fit_set, eval_set, k = trainer._load_data()
        assert (len(fit_set), k) == (1797, 10)
        run = trainer._build(fit_set, eval_set, k, device, dist, None)
        assert (run.epochs, run.steps_per_epoch, run.total_steps) == (2, 3, 6)
        assert run.optimizer is not None and run.start_epoch == 0
        assert (trainer.run_dir / "config.yaml").is_file()
        trainer._start_training(run)
        assert run.model is run.method and run.auxiliary is None
        assert run.frozen is not None and run.on_device  # pixels: cached-feature views
        trainer._epoch(run, 0)
        assert [r["event"] for r in run.log.records] == ["train", "eval"]  # eval_every = 1
        assert (trainer.run_dir / "last.pt").is_file()  # checkpoint_every = 1
        result = trainer._finish(run, 0.0)
    assert result.summary["schedule"]["steps"] == 6 and result.summary["metrics"]["acc"] > 0
    assert (trainer.run_dir / "predictions.csv").is_file()


def test_planning_refuses_a_batch_larger_than_the_fit_set(tmp_path):
    cfg = api.make_config("toy", "digits", overrides={**OVERRIDES, "train.batch_size": 4096})
    with pytest.raises(ConfigError, match="exceeds the 1797 training images"):
        Trainer(cfg, tmp_path / "run").fit()
    assert not (tmp_path / "run").exists()  # the failed start's folder is removed again
