"""Crash test: SIGKILL a short training at random moments, resume each time, and check that
the result is the uninterrupted run's, bit for bit, with no temporary or lock file left.

Python and torch start once, in a server process that forks a child per training
(tests/crash_server.py): imports take seconds on a busy machine, this training a few.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SERVER = Path(__file__).resolve().parent / "crash_server.py"
KILLS = 5
BUDGET_S = 60.0  # for the kills; the two complete runs come on top
EPOCHS = 30
SETTINGS = {
    "encoder.name": "pixels",
    "data.protocol": "all",
    "train.epochs": EPOCHS,
    "train.optimizer.lr": 0.01,
    "train.cpu_threads": 1,
    "train.eval_every": 3,
}


def argv(out: Path) -> list[str]:
    """A fresh training, or --resume once a checkpoint exists (as a user would do)."""
    base = ["train", "--out", str(out), "--no-progress"]
    if (out / "last.pt").exists() or (out / "previous.pt").exists():
        return [*base, "--resume"]
    return [*base, "--method", "toy", "--dataset", "digits"] + [
        f"--set={k}={v}" for k, v in SETTINGS.items()
    ]


@pytest.fixture
def train():
    """train(out, kill_after=None) -> exit code of one training in the forking server."""
    server = subprocess.Popen(
        [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    def run(out: Path, kill_after: float | None = None) -> int:
        server.stdin.write(json.dumps({"argv": argv(out), "kill_after": kill_after}) + "\n")
        server.stdin.flush()
        return int(server.stdout.readline())

    yield run
    server.stdin.close()
    server.wait(timeout=60)


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, train):
    reference = tmp_path / "reference"
    assert train(reference) == 0
    config, summary = reference / "config.yaml", reference / "summary.json"
    train_s = summary.stat().st_mtime - config.stat().st_mtime
    rng = random.Random(0)
    out = tmp_path / "killed"
    kills, t0 = 0, time.perf_counter()
    while kills < KILLS and time.perf_counter() - t0 < BUDGET_S:
        code = train(out, kill_after=rng.uniform(0, train_s))
        assert code in (0, -signal.SIGKILL), code
        kills += code == -signal.SIGKILL
    assert kills >= 1
    assert train(out) == 0
    want = torch.load(reference / "last.pt", weights_only=True)
    got = torch.load(out / "last.pt", weights_only=True)
    assert got["epoch"] == want["epoch"] == EPOCHS and got["finished"]
    for key, value in want["model"].items():
        assert torch.equal(value, got["model"][key]), key
    result = json.loads((out / "summary.json").read_text())
    assert result["metrics"] == json.loads(summary.read_text())["metrics"]
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no temporary file, no lock
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["event"] == "train"] == list(range(1, EPOCHS + 1))
