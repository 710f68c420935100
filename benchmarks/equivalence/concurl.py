"""ConCURL: deepclust's training step against the authors' released code, in float64.

    python benchmarks/equivalence/concurl.py --official /path/to/ConCURL_NCE

Authors' side: JayanthRR/ConCURL_NCE imported from --official at run time. Their main.py is
imported with run.sh's CIFAR-10 arguments (its argument parser reads them), their model is
built by their load_model (CIFAR ResNet-18, 128-d NCE head, projection head 2048, 64
Gaussian projections to 152 dims), their lemniscate NCEAverage / NCECriterion hold the
memory bank, and each step is their own main.train() on a one-batch loader.
deepclust's side: configs/concurl/cifar10.yaml, stepped by the engine's optimisation_step.

Identical: weights (deepclust's initial weights copied into theirs, including the
prototypes, the 64 projections, the memory bank), the two views of every step, the batch
indices and the 4096 negatives of every row (deepclust's draws fed to their alias sampler).
Compared per step: L_nce and L_consensus, the gradient of every parameter group; after the
steps: parameters, BatchNorm statistics, the memory bank and Z; and the per-epoch state the
released evaluation uses, the eval-mode 128-d NCE features that k-means clusters.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

N_SAMPLES, BATCH, EVAL_IMAGES = 64, 4, 8
RUN_SH_CIFAR10 = (
    "--use-no-grad --hidden-mlp 2048 --eval-freq 10 --trial 2 --workers 8 --use-consensus "
    "--use-rp --exp-name nce_consensus --alpha 0.0 --beta 1.0 --gamma 1.0 --projection-dim 152 "
    "--n-transforms 64 --use-torch-resnet --arch resnet18 --use-slightly-diff-views --lr 0.015 "
    "--optim SGD --batch-size 128 --nce-temp 0.85 --nce-k 4096 --n_clusters 10 --num-epochs 1 "
    "--datapath /placeholder/CIFAR10 --logdir /placeholder/log --image-size 32"
)


def import_authors(folder: Path, patches: common.Patches) -> Any:
    patches.stub_module(
        "pandas", "utils.py imports it for write_csv only (never called here)",
        DataFrame=type("DataFrame", (), {}), Series=type("Series", (), {}),
    )  # fmt: skip
    patches.stub_module(
        "skimage", "the CIFAR-100 coarse dataset imports skimage.io (no data is loaded here)"
    )
    sys.modules["skimage.io"] = sys.modules["skimage"]
    sys.modules["skimage"].io = sys.modules["skimage"]  # type: ignore[attr-defined]

    class Writer:
        def __init__(self, *a: Any, **k: Any) -> None: ...

        def add_scalar(self, *a: Any, **k: Any) -> None: ...

    patches.stub_module(
        "torch.utils.tensorboard",
        "tensorboard is not installed; a no-op SummaryWriter",
        SummaryWriter=Writer,
    )
    with common.official_on_path(folder, RUN_SH_CIFAR10.split()):
        import main  # type: ignore[import-not-found]
    patches.add("main.py imported with run.sh's CIFAR-10 arguments (sys.argv), cwd = its folder")
    return main


def our_name_to_theirs(name: str) -> str | None:
    if name.startswith("encoder.body."):
        if name.startswith("encoder.body.fc"):
            return None
        return "backbone." + name.removeprefix("encoder.body.").replace("downsample", "shortcut")
    if name.startswith("instance_head."):
        return "backbone.linear." + name.removeprefix("instance_head.")
    if name.startswith("projection_head."):
        return name
    if name == "prototypes":
        return "prototypes.weight"
    return None


def build(folder: Path, patches: common.Patches) -> dict[str, Any]:
    main = import_authors(folder, patches)
    from deepclust.config import build_config
    from deepclust.training.build import build_method, build_optimizer

    torch.manual_seed(0)
    cfg = build_config("concurl", "cifar10")
    ours = build_method(cfg, num_clusters=10, image_size=32, num_samples=N_SAMPLES).double()
    a = main.args
    with common.official_on_path(folder):
        theirs = main.load_model(a).double()
    lemniscate = main.NCEAverage(a.low_dim, N_SAMPLES, a.nce_k, a.nce_temp, a.nce_m)
    criterion = main.NCECriterion(N_SAMPLES)

    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    pairs = {n: t for n in ours_state if (t := our_name_to_theirs(n)) is not None}
    common.check_one_to_one(
        pairs,
        list(ours_state),
        list(theirs_state),
        ignore_ours=lambda n: our_name_to_theirs(n) is None,
    )
    common.copy_into(pairs, ours_state, theirs_state)
    with torch.no_grad():  # the 64 projections and the memory bank
        theirs.rand_transforms = [r.clone() for r in ours.projections]
        lemniscate.memory.copy_(ours.memory_bank)
    # their optimiser, as main.main() builds it; ours from the config
    opt_theirs = torch.optim.SGD(
        theirs.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay
    )
    opt_ours = build_optimizer(ours.parameter_groups(), cfg)
    return dict(
        main=main, cfg=cfg, ours=ours, theirs=theirs, lemniscate=lemniscate,
        criterion=criterion, pairs=pairs, opt_ours=opt_ours, opt_theirs=opt_theirs,
    )  # fmt: skip


def run_steps(b: dict[str, Any], steps: int, patches: common.Patches) -> list[dict[str, Any]]:
    import deepclust.methods.concurl as dc_concurl
    from deepclust.methods.base import StepInfo
    from deepclust.training.steps import optimisation_step

    main, ours, theirs = b["main"], b["ours"], b["theirs"]
    ours_named = {n: p for n, p in ours.named_parameters() if n in b["pairs"] and p.requires_grad}
    theirs_all = dict(theirs.named_parameters())
    theirs_named = {n: theirs_all[b["pairs"][n]] for n in ours_named}
    grads_ours = common.spy_on_step(b["opt_ours"], ours_named)
    grads_theirs = common.spy_on_step(b["opt_theirs"], theirs_named)

    drawn: list[torch.Tensor] = []
    sample = dc_concurl.sample_negatives
    dc_concurl.sample_negatives = lambda *a, **k: drawn.append(sample(*a, **k)) or drawn[-1]
    recorded: dict[str, float] = {}

    def criterion(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = b["criterion"](x, y)
        recorded["nce"] = loss.item()
        return loss

    consensus = main.ConsensusLoss

    def consensus_spy(*a: Any, **k: Any) -> torch.Tensor:
        loss = consensus(*a, **k)
        recorded["consensus"] = loss.item()
        return loss

    main.ConsensusLoss = consensus_spy
    patches.add(
        "main.ConsensusLoss, NCECriterion: wrapped to record their values (maths unchanged)"
    )
    patches.add("NCEAverage.multinomial.draw: returns deepclust's negatives (random draws fixed)")

    ours.on_train_start(SimpleNamespace(seed=0))
    ours.train()
    gen = torch.Generator().manual_seed(1234)
    out = []
    for s in range(steps):
        views = [torch.randn(BATCH, 3, 32, 32, generator=gen) for _ in range(2)]
        idx = torch.randperm(N_SAMPLES, generator=gen)[:BATCH]
        info = StepInfo(0, s, s, steps, steps, indices=idx)
        _, losses = optimisation_step(ours, ours, b["opt_ours"], views, info)
        negatives = drawn[-1]
        b["lemniscate"].multinomial.draw = lambda n, neg=negatives, i=idx: torch.cat(
            [i[:, None], neg], 1
        ).reshape(-1)
        loader = [((views[0].clone(), views[1].clone()), None, idx.clone())]
        main.train(
            loader, theirs, b["lemniscate"], criterion, b["opt_theirs"], 0, s,
            io.StringIO(), main.SummaryWriter(), main.args.swav_temp, nce_baseline=False,
        )  # fmt: skip
        beta, gamma = main.args.beta, main.args.gamma
        terms = {
            "nce": (losses["nce"].item(), beta * recorded["nce"]),
            "consensus": (losses["consensus"].item(), gamma * recorded["consensus"]),
        }
        out.append(common.step_record(terms, grads_ours[-1], grads_theirs[-1]))
    return out


def compare_after(b: dict[str, Any]) -> tuple[dict, dict, dict]:
    ours, theirs = b["ours"], b["theirs"]
    o_state, t_state = ours.state_dict(), theirs.state_dict()
    names = dict(ours.named_parameters())
    params = {n: o_state[n] for n in b["pairs"] if n in names}
    params_rel = common.grouped_rel(params, {n: t_state[b["pairs"][n]] for n in params})
    buffers = {n: t for n, t in b["pairs"].items() if n not in names}
    buffers_rel = common.per_name_rel(
        {n: o_state[n] for n in buffers}, {n: t_state[t] for n, t in buffers.items()}
    )
    buffers_rel = {
        "BatchNorm running statistics (max)": max(buffers_rel.values()),
        "memory_bank": common.rel(ours.memory_bank, b["lemniscate"].memory),
        "nce_z": common.rel(ours.nce_z, b["lemniscate"].params[2]),
        "projections": common.rel(ours.projections, torch.stack(theirs.rand_transforms)),
    }
    gen = torch.Generator().manual_seed(99)
    images = torch.randn(EVAL_IMAGES, 3, 32, 32, generator=gen)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        f_ours, _ = ours.embed(images, True, False)
        f_theirs, _, _ = theirs.forward(images)
    state = {"eval-mode 128-d NCE features (the k-means input)": common.rel(f_ours, f_theirs)}
    return params_rel, buffers_rel, state


def main() -> None:
    args = common.parse_args("concurl", __doc__)
    started = time.time()
    patches = common.Patches()
    common.float64_everywhere(patches)
    common.cpu_only(patches)
    b = build(args.official, patches)
    trained = {n: p for n, p in b["ours"].named_parameters() if p.requires_grad}
    before = common.snapshot(trained)
    steps = run_steps(b, args.steps, patches)
    moved = common.grouped_rel(trained, before)
    params_rel, buffers_rel, state = compare_after(b)
    setup = {
        "config": "configs/concurl/cifar10.yaml",
        "authors_args": "run.sh, CIFAR-10 block",
        "encoder": "ResNet-18, CIFAR stem",
        "images": f"{BATCH} per step, 2 views of 32 px (random normal, identical on both sides)",
        "fit_set_size": N_SAMPLES,
        "negatives": 4096,
        "optimizer": "SGD lr 0.015, momentum 0.9, weight decay 5e-4",
    }
    notes = [
        "prototypes: fixed on both sides (their L_consensus uses .data, alpha = 0; deepclust "
        "detach_prototypes: true), so neither optimiser touches them",
    ]
    common.summarise(
        "concurl",
        args,
        patches,
        setup,
        steps,
        params_rel,
        buffers_rel,
        state,
        notes,
        started,
        moved,
    )


if __name__ == "__main__":
    main()
