"""The engine's speed switches: they change how fast a step runs, never what it computes."""

from __future__ import annotations

import copy
import linecache
import warnings

import pytest
import torch

import toy_method  # noqa: F401  (registers the test-only method "toy")
from deepclust import api
from deepclust.data.store import ImageSet
from deepclust.data.views import ViewGenerator
from deepclust.engine.context import FitContext
from deepclust.engine.device import autocast_dtype
from deepclust.engine.distributed import DistInfo
from deepclust.engine.sampler import epoch_batches
from deepclust.engine.transfer import to_device
from deepclust.training.build import (
    apply_speed_settings,
    build_method,
    build_optimizer,
    data_on_device,
    match_parameter_layout,
)
from deepclust.training.steps import EpochViews, RunningMeans, StepBatches
from deepclust.training.trainer import Trainer

TOY = {
    "encoder.name": "small_cnn",
    "data.protocol": "all",
    "train.epochs": 1,
    "train.batch_size": 128,
    "train.optimizer.name": "sgd",  # Adam would magnify rounding in near-zero gradients
    "train.optimizer.lr": 0.05,
    "train.progress": False,
    "train.eval_every": 0,
    "train.max_steps_per_epoch": 4,
}


def test_running_means_are_the_step_means() -> None:
    gen = torch.Generator().manual_seed(0)
    steps = [
        {"a": torch.rand((), generator=gen), "b": torch.randn((), generator=gen)} for _ in range(5)
    ]
    means = RunningMeans(torch.device("cpu"))
    assert means.read() is None
    for s in steps:
        means.add(s)
    got = means.read()
    for key in ("a", "b"):
        want = torch.stack([s[key] for s in steps]).mean().item()
        assert got[key] == pytest.approx(want, rel=1e-6)
        assert means.sums[key].item() == pytest.approx(5 * want, rel=1e-6)


def test_optimizer_state_follows_parameter_layout() -> None:
    """Adam state loaded from a contiguous run is re-laid out for channels_last weights, and
    the next step equals the step of the contiguous run."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    grad = torch.randn_like(conv.weight)
    ref = torch.optim.Adam(conv.parameters(), lr=0.1, foreach=True)
    conv.weight.grad, conv.bias.grad = grad.clone(), torch.randn_like(conv.bias)
    ref.step()
    state = copy.deepcopy(ref.state_dict())  # load_state_dict would share its tensors

    nhwc = torch.nn.Conv2d(3, 8, 3)
    nhwc.load_state_dict(conv.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(nhwc.parameters(), lr=0.1, foreach=True)
    opt.load_state_dict(state)
    assert opt.state[nhwc.weight]["exp_avg"].stride() != nhwc.weight.stride()
    match_parameter_layout(opt)
    for value in opt.state[nhwc.weight].values():
        if value.ndim == 4:
            assert value.stride() == nhwc.weight.stride()
    for module, o in ((conv, ref), (nhwc, opt)):
        module.weight.grad = grad.clone().contiguous(
            memory_format=torch.channels_last if module is nhwc else torch.contiguous_format
        )
        module.bias.grad = torch.ones_like(module.bias)
        o.step()
    torch.testing.assert_close(nhwc.weight, conv.weight)


def test_channels_last_training_equals_contiguous(tmp_path) -> None:
    runs = {}
    for flag in (False, True):
        cfg = api.make_config("toy", "digits", overrides={**TOY, "train.channels_last": flag})
        api.train(cfg, out=tmp_path / str(flag))
        runs[flag] = torch.load(tmp_path / str(flag) / "last.pt", weights_only=True)["model"]
    assert runs[True].keys() == runs[False].keys()
    for key, value in runs[False].items():
        torch.testing.assert_close(runs[True][key], value, atol=1e-4, rtol=1e-4, msg=key)


def test_speed_settings_keep_checkpoint_keys() -> None:
    cfg = api.make_config(
        "toy", "digits", overrides={**TOY, "train.compile": True, "train.channels_last": True}
    )
    method = build_method(cfg, 10, 8, 100)
    keys = list(method.state_dict())
    assert apply_speed_settings(method, cfg, torch.device("cpu")) is True
    assert list(method.state_dict()) == keys
    conv = next(m for m in method.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    pixels = api.make_config("toy", "digits", overrides={**TOY, "encoder.name": "pixels"})
    assert (
        apply_speed_settings(build_method(pixels, 10, 8, 100), pixels, torch.device("cpu")) is False
    )


def test_data_on_device_rules() -> None:
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    cpu = torch.device("cpu")
    for augment_on, want in (("auto", False), ("loader", False), ("device", True)):
        cfg = api.make_config("toy", "digits", overrides={**TOY, "data.augment_on": augment_on})
        assert data_on_device(cfg, cpu, images) is want
    t = torch.arange(3)
    assert to_device(t, cpu) is t


def test_cpu_threads_setting(tmp_path) -> None:
    before = torch.get_num_threads()
    try:
        cfg = api.make_config("toy", "digits", overrides={**TOY, "train.cpu_threads": 1})
        api.train(cfg, out=tmp_path / "run")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["imc-swav", "concurl", "digpro"])
def test_training_steps_do_not_wait_for_the_gpu(name: str) -> None:
    """After two warm-up steps, the engine's loop syncs the host only to report the epoch."""
    device = torch.device("cuda")
    overrides = {"encoder.name": "small_cnn", "train.batch_size": 64, "train.progress": False}
    if name == "digpro":
        overrides["params.warmup_epochs"] = 0
    cfg = api.make_config(name, "cifar10", overrides=overrides)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (512, 3, 32, 32), generator=gen, dtype=torch.uint8)
    fit_set = ImageSet(images, torch.zeros(512, dtype=torch.long))
    method = build_method(cfg, 10, 32, len(fit_set)).to(device)
    amp = autocast_dtype(cfg, device)
    method.on_train_start(
        FitContext(fit_set, device, 0, 0, method.encoder.eval_transform(), 64, amp)
    )
    method.train()
    channels_last = apply_speed_settings(method, cfg, device)
    optimizer = build_optimizer(method.parameter_groups(), cfg, device)
    views = ViewGenerator(method.view_spec())
    on_device = images.to(device)
    batches = epoch_batches(len(fit_set), 64, 0, 0)
    trainer = Trainer(cfg, "unused")

    def epoch(index: int, batch_list: list[torch.Tensor]) -> None:
        data = StepBatches(EpochViews(on_device, batch_list, views, 0, index, 0, 64))
        trainer._train_epoch(
            method,
            method,
            optimizer,
            data,
            True,
            device,
            amp,
            index,
            11,  # steps per epoch: the checked steps are 11..14, so DigPro's k-means
            22,  # re-initialisation of its groups (every K = 10 steps, with syncs) stays out
            DistInfo(),
            channels_last,
        )

    epoch(0, batches[:2])
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            epoch(1, batches[2:6])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    sites = {(w.filename, w.lineno, linecache.getline(w.filename, w.lineno).strip()) for w in syncs}
    # the epoch's statistics are read once, at its end: all_reduce_sum(v).item() per loss
    unexpected = [s for s in sites if not (s[0].endswith("trainer.py") and ".item()" in s[2])]
    assert not unexpected, unexpected
