import itertools
import math

import pytest
import torch

from deepclust.config import ScheduleConfig
from deepclust.encoders import build_encoder
from deepclust.engine import checkpoint as ckpt
from deepclust.engine.sampler import epoch_batches, stream_batches
from deepclust.engine.schedule import lr_factor
from deepclust.errors import CheckpointError, DeepclustError


def test_warmup_then_multistep():
    cfg = ScheduleConfig(name="multistep", warmup_iters=4, milestones=(2, 3), gamma=0.4)
    f = [lr_factor(s, cfg, steps_per_epoch=5, total_steps=20) for s in range(20)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[4:10] == pytest.approx([1.0] * 6)  # epochs 0-1
    assert f[10:15] == pytest.approx([0.4] * 5)  # epoch 2
    assert f[15:] == pytest.approx([0.16] * 5)  # epoch 3


def test_cosine_reaches_floor_and_is_monotone():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg, steps_per_epoch=10, total_steps=110) for s in range(110)]
    assert f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert f[-1] > 0.1 - 1e-9


def test_sharded_batches_cover_the_global_batch():
    one = epoch_batches(50, 8, seed=3, epoch=1)
    r0 = epoch_batches(50, 8, seed=3, epoch=1, rank=0, world_size=2)
    r1 = epoch_batches(50, 8, seed=3, epoch=1, rank=1, world_size=2)
    assert len(one) == 6  # drop_last
    for full, a, b in zip(one, r0, r1, strict=True):
        assert torch.equal(full, torch.cat([a, b]))
    assert not torch.equal(torch.cat(one), torch.cat(epoch_batches(50, 8, seed=3, epoch=2)))


def test_stream_batches_deal_every_row_once_per_cycle_and_shard_like_epochs():
    rows = torch.arange(100, 110)  # 10 rows, batches of 4: cycles end mid-batch
    one = stream_batches(rows, 4, steps=5, seed=3, epoch=1)
    dealt = torch.cat(one)
    assert len(one) == 5 and dealt.shape == (20,)
    for cycle in dealt.split(10):
        assert sorted(cycle.tolist()) == list(range(100, 110))  # a permutation of the rows
    halves = [stream_batches(rows, 4, 5, 3, 1, rank=r, world_size=2) for r in (0, 1)]
    for full, a, b in zip(one, *halves, strict=True):
        assert torch.equal(full, torch.cat([a, b]))
    assert torch.equal(dealt, torch.cat(stream_batches(rows, 4, 5, 3, 1)))  # deterministic
    assert not torch.equal(dealt, torch.cat(stream_batches(rows, 4, 5, 3, 2)))  # per epoch
    # not the epoch permutation of the main batches
    assert not torch.equal(dealt[:8] - 100, torch.cat(epoch_batches(10, 4, 3, 1)))
    with pytest.raises(ValueError, match="at least as many rows"):
        stream_batches(rows, 16, 1, 0, 0)


@pytest.mark.parametrize(
    ("size", "stride", "has_pool"), [(32, 1, False), (96, 1, True), (160, 2, True)]
)
def test_resnet_stems(size, stride, has_pool):
    enc = build_encoder("resnet18", size)
    assert enc.body.conv1.stride == (stride, stride)
    assert isinstance(enc.body.maxpool, torch.nn.Identity) != has_pool
    out = enc(torch.randn(2, 3, size, size))
    assert out.shape == (2, 512) and enc.feature_dim == 512


def test_resnet50_and_unknown_encoder():
    assert build_encoder("resnet50", 32).feature_dim == 2048
    with pytest.raises(DeepclustError, match="resnet18"):
        build_encoder("resnet19", 32)


def test_atomic_checkpoint_keeps_previous_and_falls_back(tmp_path):
    meta = {"num_clusters": 2, "image_size": 8, "num_samples": 3}
    state = {"format": ckpt.FORMAT_VERSION, "method": "toy", "config": {}, "meta": meta}
    state.update({"model": {"w": torch.arange(3)}, "rng": {}, "epoch": 1})
    ckpt.save_atomic(state, tmp_path / ckpt.LAST)
    ckpt.save_atomic({**state, "epoch": 2}, tmp_path / ckpt.LAST)
    assert ckpt.load_latest(tmp_path)["epoch"] == 2
    data = (tmp_path / ckpt.LAST).read_bytes()
    (tmp_path / ckpt.LAST).write_bytes(data[: len(data) // 2])  # truncated by a crash
    with pytest.warns(UserWarning, match="truncated or corrupt"):
        assert ckpt.load_latest(tmp_path)["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": ckpt.FORMAT_VERSION, "x": Evil()}, tmp_path / ckpt.LAST)
    with pytest.raises(CheckpointError, match="weights_only"):
        ckpt.load_latest(tmp_path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.load_latest(tmp_path)


def test_rng_round_trip():
    import random

    import numpy as np

    state = ckpt.rng_state()
    a = (torch.rand(2), np.random.rand(), random.random())
    ckpt.restore_rng(state)
    b = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
