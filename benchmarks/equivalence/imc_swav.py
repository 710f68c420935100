"""IMC-SwAV: deepclust's training step against the authors' released code, in float64.

    python benchmarks/equivalence/imc_swav.py --official /path/to/imc-swav-pub

Authors' side: foiv0s/imc-swav-pub imported from --official at run time: their Model
(ResNet-18 with the 32 px stem, projection 512 -> 512 -> 128, 1000 prototypes, classifier)
and their own train_model / _train loop (Adam betas (0.8, 0.999), weight decay 1e-5, the
500-iteration warm-up with the prototypes' gradient removed) for one epoch of --steps
batches; its per-epoch test pass and checkpointing are stubbed out.
deepclust's side: configs/imc-swav/cifar10.yaml (per-view passes, contiguous layout),
stepped by optimisation_step with the engine's warm-up schedule.

Identical: all weights (deepclust's copied into theirs, BatchNorm statistics included),
the 2 + 4 views of every step (28 / 18 px). Compared per step: L_swav, L_mi, L_logit and
every parameter group's gradient; after the steps parameters and BatchNorm statistics, and
the eval-mode cluster probabilities the prediction uses.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

BATCH, K, EVAL_IMAGES = 4, 10, 8


def import_authors(folder: Path, patches: common.Patches) -> Any:
    import numpy as np

    if not hasattr(np, "product"):
        patches.setattr(np, "product", np.prod, "removed in NumPy 2 (their parameter count)")
    patches.stub_module("tensorboardX", "not installed; stats logging only", SummaryWriter=object)
    with common.official_on_path(folder):
        import model  # type: ignore[import-not-found]
        import task_train  # type: ignore[import-not-found]
    patches.setattr(task_train, "test_model", lambda *a, **k: None, "per-epoch test pass off")
    patches.setattr(
        task_train, "update_train_accuracies", lambda *a, **k: None, "train accuracy (labels) off"
    )
    recorder = SimpleNamespace(by_id={}, seen=[])

    class RecordingAdam(torch.optim.Adam):
        def step(self, *a: Any, **k: Any) -> Any:  # their grads, by deepclust's names
            grads = {}
            for group in self.param_groups:
                for q in group["params"]:
                    grads[recorder.by_id[id(q)]] = q.grad.clone() if q.grad is not None else None
            recorder.seen.append(grads)
            return super().step(*a, **k)

    patches.setattr(
        task_train, "optim", SimpleNamespace(Adam=RecordingAdam),
        "its Adam records the gradients before each step (torch.optim itself untouched)",
    )  # fmt: skip
    return SimpleNamespace(Model=model.Model, task_train=task_train, recorder=recorder)


def our_name_to_theirs(name: str) -> str | None:
    if name.startswith("encoder.body."):
        rest = name.removeprefix("encoder.body.")
        head, _, tail = rest.partition(".")
        if head in ("conv1", "bn1"):
            return f"encoder.module.model.covn1.{0 if head == 'conv1' else 1}.{tail}"
        return None if head == "fc" else f"encoder.module.model.{rest}"
    for ours, theirs in (
        ("projection.", "project.project."),
        ("prototypes.", "prototypes.prototypes."),
        ("classifier.", "auxhead.aux_head."),
    ):
        if name.startswith(ours):
            return theirs + name.removeprefix(ours)
    return None


def build(au: Any, mi_eps: float) -> dict[str, Any]:
    from deepclust.config import build_config
    from deepclust.training.build import build_method, build_optimizer

    torch.manual_seed(0)
    cfg = build_config("imc-swav", "cifar10", overrides=[("params.mi_eps", mi_eps)])
    ours = build_method(cfg, num_clusters=K, image_size=32, num_samples=64).double()
    theirs = au.Model(n_classes=K, encoder_size=32, prototypes=1000, project_dim=128).double()
    o_state, t_state = ours.state_dict(), theirs.state_dict()
    pairs = {n: t for n in o_state if (t := our_name_to_theirs(n)) is not None}
    common.check_one_to_one(
        pairs, list(o_state), [n for n in t_state if "layer_list" not in n],
        ignore_ours=lambda n: our_name_to_theirs(n) is None,
    )  # fmt: skip
    common.copy_into(pairs, o_state, t_state)
    return dict(cfg=cfg, ours=ours, theirs=theirs, pairs=pairs,
                opt_ours=build_optimizer(ours.parameter_groups(), cfg))  # fmt: skip


def run_steps(au: Any, b: dict[str, Any], steps: int, start_epoch: int) -> list[dict]:
    """`steps` steps from their epoch `start_epoch` (their total_updates = start_epoch * steps;
    deepclust's step the same, all in its epoch 0 so that no lr milestone applies)."""
    from deepclust.engine.schedule import lr_factor
    from deepclust.methods.base import StepInfo
    from deepclust.training.steps import optimisation_step

    ours, theirs, cfg = b["ours"], b["theirs"], b["cfg"]
    theirs_params = dict(theirs.named_parameters())
    named = {n: q for n, q in ours.named_parameters() if n in b["pairs"]}
    by_id = {id(theirs_params[b["pairs"][n]]): n for n in named}
    seen_ours: list[dict[str, torch.Tensor]] = []
    seen_theirs: list[dict[str, torch.Tensor]] = []
    step_ours = b["opt_ours"].step

    def ours_step(*a: Any, **k: Any) -> Any:
        seen_ours.append(common.gradients(named))
        return step_ours(*a, **k)

    b["opt_ours"].step = ours_step

    au.recorder.by_id.clear()
    au.recorder.by_id.update(by_id)
    au.recorder.seen.clear()
    seen_theirs = au.recorder.seen
    recorded: list[dict[str, float]] = []
    forward = theirs.forward

    def recording_forward(*a: Any, **k: Any) -> Any:
        res = forward(*a, **k)
        recorded.append({t: res[f"{t}_loss" if t != "logit" else "lgt_reg"].item()
                         for t in ("swav", "mi", "logit")})  # fmt: skip
        return res

    theirs.forward = recording_forward

    gen = torch.Generator().manual_seed(21)
    loader, mine = [], []
    sizes = [28, 28, 18, 18, 18, 18]
    per_epoch, total = 10**6, 10**7
    first = start_epoch * steps
    ours.train()
    for s in range(steps):
        views = [torch.randn(BATCH, 3, size, size, generator=gen) for size in sizes]
        factor = lr_factor(first + s, cfg.train.schedule, per_epoch, total)
        for group in b["opt_ours"].param_groups:
            group["lr"] = group["initial_lr"] * factor
        info = StepInfo(0, first + s, first + s, per_epoch, total, indices=torch.arange(BATCH))
        _, losses = optimisation_step(ours, ours, b["opt_ours"], views, info)
        mine.append({k: v.item() for k, v in losses.items()})
        loader.append(((
            [v.clone() for v in views], None), torch.zeros(BATCH, dtype=torch.long),
            torch.arange(BATCH)))  # fmt: skip
    checkpointer = SimpleNamespace(get_current_position=lambda: start_epoch, update=lambda e: 0)
    tracker = SimpleNamespace(record_stats=lambda *a, **k: None)
    au.task_train.train_model(
        theirs, 5e-4, loader, None, [2, 4], tracker, checkpointer, "cpu", 500, start_epoch + 1,
        1e-5,
    )  # fmt: skip
    out = []
    for s in range(steps):
        theirs_grads = {
            n: g if g is not None else torch.zeros_like(named[n]) for n, g in seen_theirs[s].items()
        }
        terms = {k: (mine[s][k], recorded[s][k]) for k in ("swav", "mi", "logit")}
        out.append(common.step_record(terms, seen_ours[s], theirs_grads))
    return out


def compare_after(b: dict[str, Any]) -> tuple[dict, dict, dict]:
    ours, theirs = b["ours"], b["theirs"]
    o_state, t_state = ours.state_dict(), theirs.state_dict()
    # they normalise the prototypes at the start of each forward pass, deepclust after each
    # step: compared as the next forward pass sees them (normalised)
    key = "prototypes.prototypes.weight"
    t_state[key] = torch.nn.functional.normalize(t_state[key], dim=1)
    names = set(dict(ours.named_parameters()))
    params_rel, grouped = common.state_errors(o_state, t_state, b["pairs"], names)
    images = torch.randn(EVAL_IMAGES, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        mine = ours.predict_proba(images)
        feats = theirs.encoder(images)
        theirs_p = torch.softmax(theirs.auxhead(feats), dim=1)
    state = {"eval-mode cluster probabilities (rel)": common.rel(mine, theirs_p)}
    return params_rel, grouped, state


def window(au: Any, steps: int, start_epoch: int, mi_eps: float) -> dict[str, Any]:
    b = build(au, mi_eps)
    trained = {n: q for n, q in b["ours"].named_parameters() if q.requires_grad}
    before = common.snapshot(trained)
    per_step = run_steps(au, b, steps, start_epoch)
    moved = common.grouped_rel(trained, before)
    params_rel, buffers_rel, state = compare_after(b)
    return dict(
        per_step=per_step, moved=moved, params_rel=params_rel, buffers_rel=buffers_rel,
        state=state, loss_rel_max=max(s["loss_rel_max"] for s in per_step),
        grad_rel_l2_max=max(s["grad_rel_l2_max"] for s in per_step),
        params_rel_max=max(params_rel.values()),
    )  # fmt: skip


def main() -> None:
    args = common.parse_args("imc-swav", __doc__)
    started = time.time()
    patches = common.Patches()
    common.float64_everywhere(patches)
    common.cpu_only(patches)
    au = import_authors(args.official, patches)
    patches.add("Model.forward: wrapped to record its losses (maths unchanged)")
    after = -(-501 // args.steps)  # their first epoch with total_updates past the warm-up
    guarded = window(au, args.steps, 0, 1e-12)  # the paper config as it is
    start = window(au, args.steps, 0, 0.0)  # params.mi_eps: 0, the code's unguarded logs
    late = window(au, args.steps, after, 0.0)  # after warm-up: prototypes learn, full lr
    setup = {
        "config": "configs/imc-swav/cifar10.yaml (contiguous layout) with params.mi_eps: 0",
        "images": f"{BATCH} per step, 2 views of 28 px + 4 of 18 px (random normal, identical)",
        "windows": "per_step: the run's first steps (warm-up lr (step + 1) / 500, prototypes "
        f"frozen); after_warmup: steps {after * args.steps}.. (lr 5e-4, prototypes learn); "
        "with_mi_eps_guard: the first steps with the config's mi_eps 1e-12",
    }
    notes = [
        "params.mi_eps (default and paper configs 1e-12) guards the MI's logs; the authors' "
        "costs.mi has none: loss terms then differ by about 1e-9 relative (with_mi_eps_guard); "
        "mi_eps: 0 reproduces their formula",
        "prototypes after the steps are compared normalised: the authors normalise them at the "
        "start of the next forward pass, deepclust right after the step (the same weights "
        "enter every loss)",
    ]
    out = common.summarise(
        "imc-swav", args, patches, setup, start["per_step"], start["params_rel"],
        start["buffers_rel"], start["state"], notes, started,
        {k: v for k, v in start["moved"].items() if k != "prototypes"},
    )  # fmt: skip
    out["after_warmup"] = late
    out["with_mi_eps_guard"] = guarded
    for key in ("loss_rel_max", "grad_rel_l2_max", "params_rel_max"):
        out[key] = max(out[key], late[key])
    args.out.write_text(__import__("json").dumps(out, indent=2) + "\n")
    print(
        f"  after warm-up: loss {late['loss_rel_max']:.1e}, grad {late['grad_rel_l2_max']:.1e}, "
        f"params {late['params_rel_max']:.1e}, moved at least "
        f"{min(late['moved'].values()):.1e}; with the mi_eps guard: loss "
        f"{guarded['loss_rel_max']:.1e}, grad {guarded['grad_rel_l2_max']:.1e}"
    )


if __name__ == "__main__":
    main()
