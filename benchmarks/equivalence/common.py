"""Shared machinery of the equivalence scripts: deepclust's training step against the authors'.

Each script (imc_swav.py, concurl.py, sic.py, digpro.py) builds deepclust's method from its
paper config and the authors' model from their released code (imported from --official DIR
at run time, never copied here), maps the weights one to one, feeds both the same inputs
and random draws, runs a few optimiser steps in float64 on the CPU and compares, per step,
the loss terms, the gradients (relative L2 per parameter group) and, after the steps, the
parameters, buffers and the method's per-epoch state. Results go to
benchmarks/results/equivalence_<method>.json with the authors' commit and every patch
applied to their code in memory.

Relative error of x against the authors' reference r: ||x - r|| / ||r|| (||x - r|| if r = 0).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import json
import os
import platform
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"

# the commits the scripts were written against (what the docs' tables report)
KNOWN_COMMITS = {
    "imc-swav": ("foiv0s/imc-swav-pub", "7849ae5bebb849743d57f524191074abca3f9296"),
    "concurl": ("JayanthRR/ConCURL_NCE", "b15a3eb4dcfb762263b11d335c89552d1a919675"),
    "sic": ("Bruce-XJChen/SIC", "995c4c26856980e514adb7388d2eaf020badb689"),
    "digpro": ("Regan-Zhang/DigPro", "dfa30b3e77d3c0c7553e84d303b91cb1cc468d06"),
}


def parse_args(method: str, doc: str | None) -> argparse.Namespace:
    """--official DIR (the authors' checkout), --steps, --out, --threads. Without --official:
    one line saying the check was skipped, exit 0."""
    parser = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--official", type=Path, help=f"checkout of {KNOWN_COMMITS[method][0]}")
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / f"equivalence_{method.replace('-', '_')}.json",
        help="JSON written here",
    )
    args = parser.parse_args()
    if args.official is None:
        print(f"equivalence {method}: skipped (no --official DIR: the authors' code is not given)")
        sys.exit(0)
    if not args.official.is_dir():
        print(f"equivalence {method}: --official {args.official} is not a folder")
        sys.exit(2)
    torch.set_num_threads(args.threads)
    return args


def source_commit(folder: Path, method: str) -> dict[str, str]:
    """The authors' repository and commit: git's if the folder is itself a checkout, else the
    commit the scripts were written against (from the folder's provenance)."""
    repo, known = KNOWN_COMMITS[method]
    commit, source = known, "stated (the folder is not a git checkout)"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        top, head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if Path(top).resolve() == folder.resolve():
            commit, source = head, "git"
    return {"repository": repo, "commit": commit, "commit_from": source, "folder": str(folder)}


class Patches:
    """Every in-memory change to the authors' code (and the harness's own), listed in the output."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)
        print(f"  patch: {text}")

    def setattr(self, obj: Any, name: str, value: Any, why: str) -> None:
        label = getattr(obj, "__name__", type(obj).__name__)
        setattr(obj, name, value)
        self.add(f"{label}.{name}: {why}")

    def stub_module(self, name: str, why: str, **attrs: Any) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        for key, value in attrs.items():
            setattr(module, key, value)
        sys.modules[name] = module
        self.add(f"sys.modules['{name}'] stubbed: {why}")
        return module


def float64_everywhere(patches: Patches) -> None:
    """float64 by default, and .float() keeps float64 on both sides.

    deepclust (and some authors' code) call .float() to lift bf16 to float32; in a float64
    comparison that would round to float32 (1e-8), so float64 tensors stay float64. Other
    dtypes convert as before.
    """
    torch.set_default_dtype(torch.float64)
    original = torch.Tensor.float

    def keep_float64(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.dtype == torch.float64:
            return self
        return original(self, *args, **kwargs)

    torch.Tensor.float = keep_float64  # type: ignore[method-assign]
    patches.add(
        "harness (both sides): default dtype float64; Tensor.float() returns float64 tensors "
        "unchanged (it would round them to float32)"
    )


def cpu_only(patches: Patches) -> None:
    """The authors call .cuda() everywhere: on this CPU run it returns the tensor / module."""
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    patches.add("torch.Tensor.cuda / nn.Module.cuda: identity (CPU run)")


@contextlib.contextmanager
def official_on_path(folder: Path, argv: list[str] | None = None) -> Iterator[None]:
    """Import from the authors' folder (first on sys.path), with their cwd and sys.argv."""
    folder = folder.resolve()
    sys.path.insert(0, str(folder))
    old_cwd, old_argv = os.getcwd(), sys.argv
    os.chdir(folder)
    if argv is not None:
        sys.argv = [str(folder / "main.py"), *argv]
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in float64 (||x - ref|| when ref is zero)."""
    x, ref = x.detach().double().reshape(-1), ref.detach().double().reshape(-1)
    if x.shape != ref.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(ref.shape)}")
    diff = float((x - ref).norm())
    scale = float(ref.norm())
    return diff / scale if scale > 0 else diff


def group_of(name: str, depth: int = 2) -> str:
    """Parameter group of a deepclust name: its first `depth` dotted parts ('encoder.body' ...)."""
    parts = name.split(".")
    if parts[0] == "encoder" and len(parts) > 2:
        return ".".join(parts[:3])  # encoder.body.layer1
    return ".".join(parts[: max(1, min(depth, len(parts) - 1))])


def grouped_rel(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative L2 of the concatenated tensors of each group (keys: deepclust names)."""
    groups: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for name in ours:
        a, b = groups.setdefault(group_of(name), ([], []))
        a.append(ours[name].detach().double().reshape(-1))
        b.append(theirs[name].detach().double().reshape(-1))
    return {g: rel(torch.cat(a), torch.cat(b)) for g, (a, b) in sorted(groups.items())}


def per_name_rel(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]
) -> dict[str, float]:
    return {name: rel(ours[name], theirs[name]) for name in sorted(ours)}


def copy_into(
    pairs: dict[str, str],
    ours: dict[str, torch.Tensor],
    theirs: dict[str, torch.Tensor],
) -> None:
    """theirs[their name] <- ours[our name] for every pair (shapes must agree)."""
    with torch.no_grad():
        for mine, other in pairs.items():
            src, dst = ours[mine], theirs[other]
            if src.shape != dst.shape:
                raise ValueError(f"{mine} {tuple(src.shape)} -> {other} {tuple(dst.shape)}")
            dst.copy_(src)


def check_one_to_one(
    pairs: dict[str, str], ours: list[str], theirs: list[str], ignore_ours: Callable[[str], bool]
) -> None:
    """Every tensor on both sides is mapped exactly once (ours minus the ignored ones)."""
    left = sorted(set(n for n in ours if not ignore_ours(n)) - set(pairs))
    right = sorted(set(theirs) - set(pairs.values()))
    doubled = len(set(pairs.values())) != len(pairs)
    if left or right or doubled:
        raise ValueError(f"weights not one to one: ours unmapped {left}, theirs unmapped {right}")


def snapshot(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in named.items()}


def gradients(named: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in named.items()
    }


def spy_on_step(opt: torch.optim.Optimizer, named: dict[str, torch.nn.Parameter]) -> list:
    """opt.step records every parameter's gradient first (a list the caller reads)."""
    seen: list[dict[str, torch.Tensor]] = []
    step = opt.step

    def recording_step(*a: Any, **k: Any) -> Any:
        seen.append(gradients(named))
        return step(*a, **k)

    opt.step = recording_step  # type: ignore[method-assign]
    return seen


def state_errors(
    ours: dict[str, torch.Tensor],
    theirs: dict[str, torch.Tensor],
    pairs: dict[str, str],
    trained: set[str],
) -> tuple[dict[str, float], dict[str, float]]:
    """(relative error per parameter group, max relative error per buffer group) of two
    state dicts whose names map one to one by `pairs`; trained: our parameter names."""
    params = {n: ours[n] for n in pairs if n in trained}
    params_rel = grouped_rel(params, {n: theirs[pairs[n]] for n in params})
    buffers = {n: t for n, t in pairs.items() if n not in trained}
    per = per_name_rel({n: ours[n] for n in buffers}, {n: theirs[t] for n, t in buffers.items()})
    grouped: dict[str, float] = {}
    for name, value in per.items():
        key = group_of(name)
        grouped[key] = max(grouped.get(key, 0.0), value)
    return params_rel, grouped


def step_record(
    losses: dict[str, tuple[float, float]],
    grads_ours: dict[str, torch.Tensor],
    grads_theirs: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """One step's comparison: loss terms (ours, theirs, rel) and gradient rel. L2 per group."""
    loss_rows = {
        k: {"deepclust": a, "authors": b, "rel": abs(a - b) / abs(b) if b else abs(a - b)}
        for k, (a, b) in losses.items()
    }
    groups = grouped_rel(grads_ours, grads_theirs)
    return {
        "losses": loss_rows,
        "loss_rel_max": max(r["rel"] for r in loss_rows.values()),
        "grad_rel_l2": groups,
        "grad_rel_l2_max": max(groups.values()),
    }


def summarise(
    method: str,
    args: argparse.Namespace,
    patches: Patches,
    setup: dict[str, Any],
    steps: list[dict[str, Any]],
    params_rel: dict[str, float],
    buffers_rel: dict[str, float],
    state_rel: dict[str, float],
    notes: list[str],
    started: float,
    moved: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Write the JSON and print the per-method table row."""
    out = {
        "method": method,
        "authors": source_commit(args.official, method),
        "command": f"python benchmarks/equivalence/{method.replace('-', '_')}.py --official DIR",
        "dtype": "float64",
        "device": "cpu",
        "steps": len(steps),
        "setup": setup,
        "patches": patches.items,
        "per_step": steps,
        "loss_rel_max": max(s["loss_rel_max"] for s in steps),
        "grad_rel_l2_max": max(s["grad_rel_l2_max"] for s in steps),
        "params_rel_after": params_rel,
        "params_rel_max": max(params_rel.values()),
        # how far the steps moved deepclust's parameters (relative): the errors above are
        # measured against changes this large, not against parameters that stood still
        "params_moved_by_steps": moved or {},
        "buffers_rel_after": buffers_rel,
        "buffers_rel_max": max(buffers_rel.values()) if buffers_rel else 0.0,
        "state_rel": state_rel,
        "state_rel_max": max(state_rel.values()) if state_rel else 0.0,
        "notes": notes,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seconds": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for i, s in enumerate(steps):
        terms = ", ".join(f"{k} {v['rel']:.1e}" for k, v in s["losses"].items())
        print(f"  step {i}: loss rel {terms}; grad rel L2 max {s['grad_rel_l2_max']:.1e}")
    print(
        f"equivalence {method}: loss rel max {out['loss_rel_max']:.1e}, grad rel L2 max "
        f"{out['grad_rel_l2_max']:.1e}, params rel max after {len(steps)} steps "
        f"{out['params_rel_max']:.1e}, buffers {out['buffers_rel_max']:.1e}, state "
        f"{out['state_rel_max']:.1e}; the steps moved parameters by at least "
        f"{min(out['params_moved_by_steps'].values(), default=0):.1e} (rel.) -> {args.out}"
    )
    return out
