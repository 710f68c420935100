"""DigPro: deepclust's training step against the authors' released code, in float64.

    python benchmarks/equivalence/digpro.py --official /path/to/DigPro

Authors' side: Regan-Zhang/DigPro imported from --official at run time: their backbone
("bigresnet18": torchvision ResNet-18, CIFAR stem), their BYOLWrapper (online / target
networks, predictor, lightly's SMoG group prototypes and memory bank, prototype
aggregation), and each step is their own BYOL.adjust_learning_rate + BYOL.train (the
loss weights, the warm-up switch, the gradient scaler's backward and SGD step) on the
settings of config/ImageNet-10_r18_propos.yml. lightly itself is not in deepclust's
environment: the script takes it from --lightly DIR (pip install --no-deps --target DIR
"lightly==1.4.25", the release of the authors' time) or from the environment.
deepclust's side: configs/digpro/cifar10.yaml (32 px, lr 0.05 at batch 256, which is the
authors' 0.05 x 256 / 256), stepped by optimisation_step with the engine's lr schedule.

Identical: all weights (online, target = online at the start, predictor, group centres),
the two views, the pseudo-labels, the latent noise (deepclust's draws given to their
randn_like), steps after the 50 warm-up epochs (every loss term on). One process: their
torch.distributed calls run on a one-process gloo group.

Compared per step: L_ins, L_group, L_proto and the gradient of every parameter group;
after the steps the online and target networks, the predictor, BatchNorm statistics and
the group centres; and the E-step input, the target's eval-mode features.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

K, N_SAMPLES, BATCH, EPOCH, STEPS_PER_EPOCH, EVAL_IMAGES = 10, 64, 8, 60, 195, 8
YML = dict(  # config/ImageNet-10_r18_propos.yml (batch scaled lr: 0.05 x 256 / 256)
    learning_rate=0.05, learning_eta_min=0.0, warmup_epochs=50, epochs=1000, momentum=0.9,
    weight_decay=5e-4, momentum_base=0.996, momentum_max=1.0, momentum_increase=False,
    lambda_predictor_lr=10.0, fix_predictor_lr=False, cluster_loss_weight=0.1,
    latent_std=0.001, temperature=0.5, hidden_size=4096, feat_dim=256, symmetric=True,
    shuffling_bn=True, acc_grd_step=1, amp=False, queue_size=0,
)  # fmt: skip


def import_authors(folder: Path, patches: common.Patches, lightly: Path | None) -> Any:
    if lightly is not None:
        sys.path.insert(0, str(lightly))
    os.environ["LIGHTLY_DID_VERSION_CHECK"] = "True"  # no version check over the network
    import numpy as np

    if not hasattr(np, "float_"):
        patches.setattr(
            np, "float_", np.float64, "removed in NumPy 2; lightly 1.4 annotates with it"
        )
    try:
        import lightly as lightly_module
    except ImportError:
        print("equivalence digpro: lightly is missing (pass --lightly DIR, see the docstring)")
        sys.exit(2)
    patches.add(f"lightly {lightly_module.__version__} from {lightly_module.__file__}")
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group("gloo", rank=0, world_size=1)
    patches.add("torch.distributed: a one-process gloo group (their gathers and broadcasts)")
    for name, why in (
        ("munkres", "evaluation only"),
        ("wandb", "logging only"),
        ("prettytable", "logging only"),
        ("cv2", "data loading only"),
    ):
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                patches.stub_module(name, f"not installed; {why}", Munkres=object)
    patches.stub_module(
        "torch._six",
        "removed from torch; inf, string_classes",
        inf=float("inf"),
        string_classes=str,
    )
    with common.official_on_path(folder):
        from models.basic_template import TrainTask  # type: ignore[import-not-found]
        from models.propos.byol import BYOL  # type: ignore[import-not-found]
        from models.propos.byol_wrapper import BYOLWrapper  # type: ignore[import-not-found]
        from network import backbone_dict  # type: ignore[import-not-found]
        from utils.grad_scaler import NativeScalerWithGradNormCount  # type: ignore[import-not-found]
    return SimpleNamespace(
        TrainTask=TrainTask, BYOL=BYOL, BYOLWrapper=BYOLWrapper, backbone_dict=backbone_dict,
        Scaler=NativeScalerWithGradNormCount,
    )  # fmt: skip


def encoder_name(name: str) -> str | None:
    """deepclust's torchvision encoder names -> theirs (nn.Sequential of its children)."""
    index = {"conv1": "0", "bn1": "1", "layer1": "3", "layer2": "4", "layer3": "5", "layer4": "6"}
    head, _, rest = name.partition(".")
    return f"{index[head]}.{rest}" if head in index else None


def our_name_to_theirs(name: str) -> str | None:
    for ours, theirs in (
        ("encoder.body.", "encoder_q."),
        ("target_encoder.body.", "encoder_k."),
    ):
        if name.startswith(ours):
            mapped = encoder_name(name.removeprefix(ours))
            return theirs + mapped if mapped else None
    for ours, theirs in (
        ("projector.", "projector_q."),
        ("target_projector.", "projector_k."),
        ("predictor.", "predictor."),
    ):
        if name.startswith(ours):
            return theirs + name.removeprefix(ours)
    return {"group_centres": "smog.group_features"}.get(name)


class Holder(torch.nn.Module):
    """Stands for their DistributedDataParallel wrapper (.module, called like the model)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *a: Any, **k: Any) -> Any:
        return self.module(*a, **k)


def build(au: Any, patches: common.Patches) -> dict[str, Any]:
    from deepclust.config import build_config
    from deepclust.training.build import build_method, build_optimizer

    torch.manual_seed(0)
    cfg = build_config("digpro", "cifar10")
    ours = build_method(cfg, num_clusters=K, image_size=32, num_samples=N_SAMPLES).double()
    opt = SimpleNamespace(**YML)
    encoder_type, dim_in = au.backbone_dict["bigresnet18"]
    byol = au.BYOLWrapper(
        encoder_type(), num_cluster=K, in_dim=dim_in, fea_dim=opt.feat_dim, **{
            k: v for k, v in vars(opt).items() if k not in ("feat_dim",)
        }
    ).double()  # fmt: skip
    ours_state, theirs_state = ours.state_dict(), byol.state_dict()
    pairs = {n: t for n in ours_state if (t := our_name_to_theirs(n)) is not None}
    theirs_names = [n for n in theirs_state if not n.startswith(("memory_bank.", "encoder."))]
    common.check_one_to_one(
        pairs, list(ours_state), theirs_names, ignore_ours=lambda n: our_name_to_theirs(n) is None
    )
    common.copy_into(pairs, ours_state, theirs_state)
    labels = torch.randint(K, (N_SAMPLES,), generator=torch.Generator().manual_seed(5))
    ours.pseudo_labels.copy_(labels)
    task = SimpleNamespace(
        opt=opt, byol=Holder(byol), psedo_labels=labels.clone(), cur_epoch=EPOCH + 1,
        iter_per_epoch=STEPS_PER_EPOCH, logger=SimpleNamespace(log_save_dir=tempfile.mkdtemp()),
        scaler=au.Scaler(amp=False),
    )  # fmt: skip
    task.cosine_annealing_LR = lambda n: au.TrainTask.cosine_annealing_LR(task, n)
    their_groups = au.TrainTask.collect_params(task, byol, exclude_bias_and_bn=False)
    task.optimizer = torch.optim.SGD(
        params=their_groups, lr=opt.learning_rate, momentum=opt.momentum,
        weight_decay=opt.weight_decay,
    )  # fmt: skip
    patches.add("their BYOL.train / adjust_learning_rate run on a stand-in for the task object")
    opt_ours = build_optimizer(ours.parameter_groups(), cfg)
    return dict(cfg=cfg, ours=ours, byol=byol, task=task, pairs=pairs, opt_ours=opt_ours)


def run_steps(au: Any, b: dict[str, Any], steps: int, patches: common.Patches) -> list[dict]:
    import deepclust.methods.digpro as dc_digpro
    from deepclust.engine.schedule import lr_factor
    from deepclust.methods.base import StepInfo
    from deepclust.training.steps import optimisation_step

    ours, byol, task, cfg = b["ours"], b["byol"], b["task"], b["cfg"]
    theirs_params = dict(byol.named_parameters())
    named_ours = {n: q for n, q in ours.named_parameters() if q.requires_grad and n in b["pairs"]}
    named_theirs = {n: theirs_params[b["pairs"][n]] for n in named_ours}
    grads_ours = common.spy_on_step(b["opt_ours"], named_ours)
    grads_theirs = common.spy_on_step(task.optimizer, named_theirs)

    noises: list[torch.Tensor] = []
    latent = dc_digpro.DigPro.latent_noise

    def latent_spy(self: Any, z: torch.Tensor, step: int, view: int) -> torch.Tensor:
        noises.append(latent(self, z, step, view))
        return noises[-1]

    dc_digpro.DigPro.latent_noise = latent_spy
    randn_like = torch.randn_like
    queue: list[torch.Tensor] = []
    torch.randn_like = lambda x, *a, **k: queue.pop(0) if queue else randn_like(x, *a, **k)
    patches.add("torch.randn_like: their latent noise is deepclust's draw / latent_std")
    recorded: list[dict[str, float]] = []
    forward = byol.forward

    def recording_forward(*a: Any, **k: Any) -> Any:
        ins, cluster, q, group = forward(*a, **k)
        recorded.append({"instance": ins.item(), "group": group.item(), "proto": cluster.item()})
        return ins, cluster, q, group

    byol.forward = recording_forward
    patches.add("BYOLWrapper.forward: wrapped to record its loss terms (maths unchanged)")

    gen = torch.Generator().manual_seed(11)
    total = YML["epochs"] * STEPS_PER_EPOCH
    out, lrs = [], []
    ours.train()
    ours.on_train_start(SimpleNamespace(seed=0))
    for s in range(steps):
        step = EPOCH * STEPS_PER_EPOCH + s
        views = [torch.randn(BATCH, 3, 32, 32, generator=gen) for _ in range(2)]
        idx = torch.randperm(N_SAMPLES, generator=gen)[:BATCH]
        factor = lr_factor(step, cfg.train.schedule, STEPS_PER_EPOCH, total)
        for group in b["opt_ours"].param_groups:
            group["lr"] = group["initial_lr"] * factor
        info = StepInfo(EPOCH, step, s, STEPS_PER_EPOCH, total, indices=idx)
        noises.clear()
        _, losses = optimisation_step(ours, ours, b["opt_ours"], views, info)
        queue[:] = [n / YML["latent_std"] for n in noises]
        n_iter = step + 1
        au.BYOL.adjust_learning_rate(task, n_iter)
        au.BYOL.train(task, ((views[0].clone(), views[1].clone()), None), idx.clone(), n_iter)
        lrs.append(
            {"deepclust": b["opt_ours"].param_groups[0]["lr"],
             "authors": task.optimizer.param_groups[0]["lr"]}
        )  # fmt: skip
        mine = {k: v.item() for k, v in losses.items()}
        theirs = recorded[-1]
        weights = {"instance": 1.0, "group": 0.3, "proto": YML["cluster_loss_weight"]}
        terms = {k: (mine[k], weights[k] * theirs[k]) for k in mine}
        out.append(common.step_record(terms, grads_ours[-1], grads_theirs[-1]))
    torch.randn_like = randn_like
    dc_digpro.DigPro.latent_noise = latent
    b["lrs"] = lrs
    return out


def compare_after(b: dict[str, Any]) -> tuple[dict, dict, dict]:
    ours, byol = b["ours"], b["byol"]
    o_state, t_state = ours.state_dict(), byol.state_dict()
    trained = {n for n, q in ours.named_parameters()}
    params_rel, grouped = common.state_errors(o_state, t_state, b["pairs"], trained)
    images = torch.randn(EVAL_IMAGES, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ours.eval()
    byol.eval()
    with torch.no_grad():
        mine = ours.target_embed(images)
        theirs = torch.nn.functional.normalize(byol.encoder(images), dim=1)
    state = {
        "E-step input: target eval-mode features (rel)": common.rel(mine, theirs),
        "lr per step (rel, max)": max(
            abs(r["deepclust"] - r["authors"]) / r["authors"] for r in b["lrs"]
        ),
    }
    return params_rel, grouped, state


def main() -> None:
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--lightly", type=Path, default=None)
    known, rest = extra.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = common.parse_args("digpro", __doc__)
    started = time.time()
    patches = common.Patches()
    common.float64_everywhere(patches)
    common.cpu_only(patches)
    au = import_authors(args.official, patches, known.lightly)
    b = build(au, patches)
    trained = {n: q for n, q in b["ours"].named_parameters() if q.requires_grad}
    before = common.snapshot(trained)
    steps = run_steps(au, b, args.steps, patches)
    moved = common.grouped_rel(trained, before)
    params_rel, buffers_rel, state = compare_after(b)
    setup = {
        "config": "configs/digpro/cifar10.yaml (32 px; lr 0.05 at batch 256)",
        "authors_settings": "config/ImageNet-10_r18_propos.yml",
        "epoch": f"{EPOCH} (after the 50 warm-up epochs), {STEPS_PER_EPOCH} steps an epoch",
        "images": f"{BATCH} per step, 2 views of 32 px (random normal, identical)",
        "fit_set_size": N_SAMPLES,
        "lr": b["lrs"],
    }
    common.summarise(
        "digpro", args, patches, setup, steps, params_rel, buffers_rel, state, [], started,
        moved,
    )  # fmt: skip


if __name__ == "__main__":
    main()
