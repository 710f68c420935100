"""Command-line interface: parses arguments and calls deepclust.api (nothing else lives here).

Imports of torch and the rest happen inside the commands, so `deepclust --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from deepclust import __version__, progress
from deepclust.errors import DeepclustError, command, counted, report_failure

# Kept here so that building the parser imports nothing heavy; tests/test_cli.py checks
# they equal evaluation.selection.CRITERIA and evaluation.shift.CORRUPTIONS.
CRITERIA = ["views", "consensus", "silhouette", "calinski_harabasz", "loss"]
CORRUPTIONS = [
    "gaussian_noise",
    "shot_noise",
    "gaussian_blur",
    "defocus_blur",
    "contrast",
    "brightness",
    "jpeg",
    "pixelate",
]
DEVICES = ["auto", "cpu", "cuda"]


class _LazyApi:
    """deepclust.api, imported on first use (it imports torch)."""

    def __getattr__(self, name: str) -> Any:
        from deepclust import api as real

        return getattr(real, name)


api = _LazyApi()


def _train_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train", parents=[common], help="train a method on a dataset and write a run folder"
    )
    p.add_argument("--method", help="clustering method (deepclust list methods)")
    p.add_argument("--dataset", help="dataset name (deepclust list datasets)")
    p.add_argument("--data-dir", help="folder holding the dataset")
    p.add_argument(
        "--encoder",
        help="backbone: a short name such as dinov2-s, timm:/open_clip:/hf:<model>, or one "
        "trained from scratch (deepclust list encoders)",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument(
        "--clusters",
        help="number of clusters K (default: number of classes); auto: estimated from a frozen "
        "encoder's features without labels",
    )
    _k_auto_arguments(p)
    p.add_argument(
        "--protocol",
        choices=["train-test", "all"],
        help="train-test: fit on train, evaluate on test; all: fit and evaluate on train+test",
    )
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--out", metavar="RUN_DIR", help="run folder (default runs/<method>-<dataset>-<time>)"
    )
    p.add_argument("--config", help="YAML config file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.optimizer.lr=0.01 (repeatable)",
    )
    p.add_argument(
        "--download", action="store_true", help="download the dataset if missing (needs internet)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    p.add_argument(
        "--seeds",
        type=int,
        help="train N runs (seeds --seed .. --seed+N-1) into RUN_DIR/seed-<s>/ and write "
        "RUN_DIR/seeds.json (mean, std, best and the label-free pick)",
    )
    p.add_argument(
        "--criterion",
        choices=CRITERIA,
        help="label-free criterion for the --seeds pick (default: consensus for 3+ seeds, else views)",
    )


FLAG_KEYS = {
    "data_dir": "data.data_dir",
    "encoder": "encoder.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "clusters": "clusters",
    "protocol": "data.protocol",
    "device": "train.device",
    "seed": "train.seed",
}


def _overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    from deepclust.config import parse_overrides

    items = [
        (key, getattr(args, flag))
        for flag, key in FLAG_KEYS.items()
        if getattr(args, flag) is not None
    ]
    if args.download:
        items.append(("data.download", True))
    return items + _progress_override() + parse_overrides(args.set)


def _progress_override() -> list[tuple[str, Any]]:
    """--no-progress (on the command or before it) as the config key training reads."""
    return [] if progress.enabled() else [("train.progress", False)]


def cmd_train(args: argparse.Namespace) -> int:
    _check_encoder_weights(args)
    k, k_range = _k_options(args) if args.clusters is not None else (None, None)
    if k is not None:
        args.clusters = None if k == "auto" else k
    overrides = _overrides(args)
    if args.resume:
        if not args.out:
            raise DeepclustError("--resume needs --out RUN_DIR: the run folder to continue.")
        seeded = api.seed_dirs(args.out) if args.seeds else []
        source = seeded[0] if seeded else args.out
        cfg = api.resume_config(source, args.method, args.dataset, overrides)
    else:
        cfg = api.make_config(args.method, args.dataset, args.config, overrides)
    from deepclust.choose_k import describe, estimate_into, write_estimate

    estimate = None
    if k == "auto" and not args.resume:
        estimate = estimate_into(cfg, k_range, args.k_estimator, cfg.train.device)
        print(describe(estimate))
    if args.seeds is not None:  # on resume, the first seed's config carries the first seed
        return _train_seeds(cfg, args, estimate)
    result = api.train(cfg, out=args.out, resume=args.resume)
    if estimate is not None:
        write_estimate(result.run_dir, estimate)
    _print_summary(result.summary)
    print(f"run folder: {result.run_dir}")
    return 0


def _train_seeds(cfg: Any, args: argparse.Namespace, estimate: Any = None) -> int:
    from deepclust.choose_k import write_estimate
    from deepclust.evaluation.seeds import format_line

    res = api.train_seeds(
        cfg, args.seeds, out=args.out, resume=args.resume, criterion=args.criterion
    )
    if estimate is not None:  # one K for every seed: its estimate beside seeds.json
        write_estimate(res.run_dir, estimate)
    for r in res.runs:
        _print_summary(r.summary)
    s = res.summary
    print(
        f"\n{s['method']} on {s['dataset']} [{s['protocol']}], {len(res.runs)} seeds: {format_line(s)}"
    )
    pick = s.get("label_free_pick")
    if pick:
        gap = f", {pick['gap_acc']:.4f} below the best by labels" if "gap_acc" in pick else ""
        acc = f" (ACC {pick['acc']:.4f}{gap})" if pick.get("acc") is not None else ""
        print(f"label-free pick ({pick['criterion']}): seed {pick['seed']}{acc}")
    print(f"run folder: {res.run_dir} (seeds.json, selection.json, seed-<s>/)")
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    m = summary.get("metrics")
    where = f"{summary['dataset']} ({summary['protocol']}: fit {summary['fit_split']}, eval {summary['eval_split']})"
    if m:
        print(
            f"{summary['method']} on {where}: ACC {m['acc']:.4f}  NMI {m['nmi']:.4f}  ARI {m['ari']:.4f}  "
            f"(n={m['n']}, K={summary['num_clusters']}, encoder {summary['encoder']}, "
            f"{summary['epochs']} epochs, seed {summary['seed']}, {summary['device']})"
        )
    else:
        print(f"{summary['method']} on {where}: no labels to score; predictions written.")
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)


def _score_line(r: dict[str, Any]) -> str:
    tag = ", held out" if r.get("held_out") else ""
    return (
        f"[{r['protocol']}, split {r['split']}{tag}]: ACC {r['acc']:.4f}  "
        f"NMI {r['nmi']:.4f}  ARI {r['ari']:.4f}  n={r['n']}"
    )


def cmd_cluster(args: argparse.Namespace) -> int:
    _check_encoder_weights(args)
    from deepclust.config import parse_overrides
    from deepclust.practice.folder import cluster_folder

    k, k_range = _k_options(args)
    res = cluster_folder(
        args.photos,
        k,
        args.out,
        k_range=k_range,
        k_estimator=args.k_estimator,
        method=args.method,
        image_size=args.image_size,
        seed=args.seed,
        device=args.device,
        export=args.export,
        copy=args.copy,
        report=not args.no_report,
        overrides=_progress_override() + _encoder_override(args) + parse_overrides(args.set),
        resume=args.resume,
        labels_from_folders=args.labels_from_folders,
        tell=lambda line: print(line, flush=True),
    )
    s = res.summary
    print(
        f"{counted(s['n_eval'], 'image')} -> {len(res.sizes)} clusters ({s['method']} heads on frozen "
        f"{s['encoder']} features, {s['epochs']} epochs, {s['device']}, {s['wall_time_s']:.0f} s)"
    )
    _print_clusters(res, args.copy)
    return 0


def _encoder_override(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """--encoder as the config key (a --set encoder.name=... after it still wins)."""
    return [] if args.encoder is None else [("encoder.name", args.encoder)]


def _check_encoder_weights(args: argparse.Namespace) -> None:
    """Before torch loads: a curated hub encoder whose weights are neither on this disk nor
    reachable fails here, in one line and about a second (encoders/catalog.py)."""
    from deepclust.config import parse_overrides
    from deepclust.encoders.catalog import require_weights

    settings = dict([*_encoder_override(args), *parse_overrides(args.set)])
    if settings.get("encoder.name") and settings.get("encoder.weights") is None:
        require_weights(str(settings["encoder.name"]))


def cmd_recut(args: argparse.Namespace) -> int:
    from deepclust.practice.recutting import recut_run

    res = recut_run(
        args.run_dir,
        args.k,
        args.out,
        device=args.device,
        report=not args.no_report,
        export=args.export,
        copy=args.copy,
    )
    r = res.summary["recut"]
    print(
        f"{counted(sum(res.sizes), 'image')}: {r['from_k']} -> {r['to_k']} clusters in "
        f"{r['seconds']:.1f} s (no training; {r['steps']} merge/split steps)"
    )
    _print_clusters(res, args.copy)
    return 0


def _print_clusters(res: Any, copy: bool) -> None:
    """Per cluster its size, quality and examples; scores, warnings and the run's files."""
    s = res.summary
    coherence = (s.get("quality") or {}).get("coherence") or []
    width = len(f"{max(res.sizes):,}")
    named = max((len(n) for n in res.names), default=0)
    for c, (size, ex) in enumerate(zip(res.sizes, res.examples, strict=True)):
        noun = counted(size, "image").split(" ")[1]  # the number is aligned on its own
        fit = (
            f"  agreement {coherence[c]:.2f}"
            if c < len(coherence) and coherence[c] is not None
            else ""
        )
        name = f" {res.names[c]:{named}s}" if named else ""
        print(f"  cluster {c:>2d}:{name} {size:>{width},} {noun:6s}{fit}  e.g. {', '.join(ex)}")
    quality = s.get("quality")
    if quality:
        print(
            f"quality (no labels): {quality['score']:.2f} ({quality['verdict']}): the share of a "
            f"photo's {quality['neighbours']} nearest neighbours in its own cluster; "
            f"{counted(quality['outliers'], 'photo')} fit no cluster well"
        )
    if s.get("metrics"):
        m = s["metrics"]
        print(
            f"scored against the {len(s.get('class_names') or [])} sub-folders as classes "
            f"(never used to fit): ACC {m['acc']:.4f}  NMI {m['nmi']:.4f}  ARI {m['ari']:.4f}"
        )
    for warning in res.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for hint in _recut_hints(res):
        print(hint)
    print(f"run folder: {res.run_dir}")
    named = ", name" if any(res.names) else ""
    print(f"  predictions.csv  one row per photo: path, cluster, confidence, agreement{named}")
    if res.report:
        print(f"  report.html      open it in a browser: {res.report.resolve().as_uri()}")
    if res.export:
        print(f"  clusters/        one folder per cluster ({'copies' if copy else 'links'})")


def _recut_hints(res: Any) -> list[str]:
    """The commands that merge the two clusters most alike, or try the other plausible K."""
    from deepclust.evaluation.quality import MERGE_HINT

    k = len(res.sizes)
    hints = []
    similar = (res.summary.get("quality") or {}).get("similar_pairs") or []
    if similar and similar[0]["link_share"] >= MERGE_HINT:
        a, b = similar[0]["clusters"]
        hints.append(f"to merge clusters {a} and {b}: deepclust recut {res.run_dir} --k {k - 1}")
    others = list(getattr(res.k_estimate, "alternatives", []) or [])
    hints += [f"another K in seconds: deepclust recut {res.run_dir} --k {o}" for o in others]
    return hints


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = api.load_run(args.run_dir, args.device, args.data_dir)
    if args.split == "both" or args.protocol == "both":  # --protocol both: the old spelling
        results = api.evaluate_protocols(run)
        if args.json:
            print(json.dumps({"run_dir": str(args.run_dir), "evaluations": results}))
            return 0
        first = results[0]
        print(f"{first['method']} on {first['dataset']} (encoder {first['encoder']}):")
        for r in results:
            print("  " + _score_line(r))
        if len(results) == 1:
            print("  (the dataset has a single split: no second protocol to report)")
        return 0
    result = api.evaluate(run, split=args.split)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['method']} on {result['dataset']} {_score_line(result)}")
        for c, name in enumerate(result.get("cluster_names", [])):
            print(f"  cluster {c}: {name}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from deepclust.outputs import check_predict_outputs

    npy = api.features_path(args.out) if args.features else None
    check_predict_outputs(args.out, npy, args.paths, args.run_dir, args.force)
    rows = api.predict(
        args.run_dir,
        args.paths,
        out=args.out,
        device=args.device,
        bad_images="fail" if args.fail_on_bad_images else "skip",
        features=args.features,
    )
    print(f"{counted(len(rows), 'image')} clustered -> {args.out}")
    named = sorted({(r["cluster"], r["name"]) for r in rows if r.get("name")})
    for c, name in named:  # clusters named by the method (e.g. SIC's nouns)
        print(f"  cluster {c} ({counted(sum(r['cluster'] == c for r in rows), 'image')}): {name}")
    if args.features:
        print(f"features (float32 [N, D], row i = CSV row i) -> {api.features_path(args.out)}")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    out = args.out
    if out is None:
        dirs = api.expand_run_dirs(args.run_dirs)
        parents = {d.parent for d in dirs}
        out = (parents.pop() if len(parents) == 1 else Path(".")) / "selection.json"
    from deepclust.outputs import check_output

    check_output(out, "select", run_dirs=api.expand_run_dirs(args.run_dirs), force=args.force)
    result = api.select(
        args.run_dirs,
        criterion=args.criterion,
        max_images=args.max_images,
        device=args.device,
        out=out,
        with_labels=not args.no_labels,
        data_dir=args.data_dir,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    crit = result["criterion"]
    print(
        f"label-free selection by '{crit}' ({'higher' if result['higher_is_better'] else 'lower'} "
        f"is better) on {counted(result['images']['n'], 'image')} of {result['images']['split']}; no labels used"
    )
    cols = ["views", "consensus", "silhouette", "calinski_harabasz", "loss", "balance"]
    print(f"{'rank':>4s}  {'run':40s} " + " ".join(f"{c[:10]:>10s}" for c in cols) + "   ACC*")
    for r in result["runs"]:
        vals = " ".join(
            f"{r[c]:10.4f}" if isinstance(r.get(c), float) else f"{'-':>10s}" for c in cols
        )
        acc = r.get("labels", {}).get("acc")
        flag = " degenerate" if r.get("degenerate") else ""
        print(
            f"{r['rank']:4d}  {r['run_dir'][-40:]:40s} {vals}   "
            + (f"{acc:.4f}" if acc is not None else "-")
            + flag
        )
    print(f"pick: {result['pick_run_dir']}")
    cmp = result.get("label_free_vs_labels")
    if cmp:
        best = cmp["best_by_labels"]
        print(f"* with labels, for checking only: best run {best['name']} (ACC {best['acc']:.4f})")
        for name, c in cmp["criteria"].items():
            print(
                f"  {name:18s} picks ACC {c['pick_acc']:.4f}  gap {c['gap_acc']:.4f}  "
                f"rank by labels {c['pick_rank_by_labels']}/{len(result['runs'])}"
            )
    print(f"written to {result['written_to']}")
    return 0


def cmd_shift(args: argparse.Namespace) -> int:
    from deepclust.evaluation.shift import parse_severities

    try:
        severities = parse_severities(args.severities)
    except ValueError as e:
        raise DeepclustError(str(e)) from None
    result = api.shift(
        args.run_dir,
        corruptions=args.corruptions,
        severities=severities,
        seed=args.seed,
        device=args.device,
        max_images=args.max_images,
        data_dir=args.data_dir,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    clean = result["clean"]
    print(
        f"{result['method']} on {result['dataset']} (encoder {result['encoder']}), "
        f"{counted(result['n'], 'image')} of {result['eval_split']}; ACC under the CIFAR-10-C corruptions"
    )
    for r in result["splits"]:
        print(f"  {_score_line(r)}")
    levels = [str(v) for v in result["severities"]]
    print(f"  {'corruption':16s}" + "".join(f"{'sev ' + v:>9s}" for v in levels) + f"{'mean':>9s}")
    print(f"  {'clean':16s}" + f"{clean['acc']:9.4f}" * len(levels) + f"{clean['acc']:9.4f}")
    for name, per in result["corruptions"].items():
        cells = "".join(f"{per[v]['acc']:9.4f}" for v in levels)
        print(f"  {name:16s}{cells}{result['mean_acc'][name]:9.4f}")
    print(
        f"  mean corrupted ACC {result['mean_corrupted_acc']:.4f} "
        f"({result['relative_acc']:.1%} of clean); NMI/ARI per cell in shift.json"
    )
    print(f"written to {Path(args.run_dir) / 'shift.json'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from deepclust.outputs import check_output

    out = args.out or Path(args.run_dir) / "report.html"
    check_output(out, "report", run_dirs=[args.run_dir], force=args.force)
    path = api.report(
        args.run_dir,
        out=args.out,
        device=args.device,
        embedding=args.embedding,
        per_cluster=args.per_cluster,
        max_points=args.max_points,
        protocols="both" if "both" in (args.split, args.protocol) else "run",
        data_dir=args.data_dir,
        tell=print,
    )
    print(f"report written to {path} ({path.stat().st_size / 1e6:.2f} MB, self-contained HTML)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from deepclust import practice

    target = practice.export(args.run_dir, copy=args.copy, redo=args.redo)
    kind = "copies of" if args.copy else "links to"
    print(f"{target}/: one folder per cluster, {kind} its photos")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from deepclust.data.datasets import DATASETS, dataset_info
    from deepclust.encoders.curated import listing
    from deepclust.methods import METHODS

    if args.what == "methods":
        for name in METHODS.names():
            doc = ((METHODS.get(name).__doc__ or "").strip().splitlines() or [""])[0]
            print(f"{name:16s} {doc}")
    elif args.what == "datasets":
        for name in DATASETS.names():
            info = dataset_info(name)
            print(f"{name:16s} {info.description}")
    elif args.what == "encoders":
        print("\n".join(listing()))
    else:
        from deepclust.config import packaged_configs

        for method, name, line in packaged_configs():
            print(f"{method:10s} {name:14s} {line}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from deepclust.demo import run_demo

    run_demo(out=Path(args.out), progress=progress.enabled())
    return 0


def _run_parser(
    sub: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str, text: str
) -> argparse.ArgumentParser:
    """A subcommand that reads a run folder (positional RUN_DIR) on a chosen device."""
    p = sub.add_parser(name, parents=[common], help=text)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--device", default="auto", choices=DEVICES)
    return p


def _data_dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="where the run's dataset is now, if it moved since training")


def _force_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out file that this command did not write",
    )


def _split_arguments(p: argparse.ArgumentParser, choices: list[str], text: str) -> None:
    """--split, the one name for 'which images are scored' (--protocol is training's word)."""
    p.add_argument("--split", choices=choices, help=text)
    # the earlier spelling of --split both on evaluate and report
    p.add_argument("--protocol", choices=["run", "both"], default="run", help=argparse.SUPPRESS)


K_ESTIMATORS = ["eigengap", "modularity", "stability", "bic", "silhouette", "calinski_harabasz"]


def _k_auto_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--k-range", metavar="MIN:MAX", help="with auto: the K tried (default 2:min(50, N/10))"
    )
    p.add_argument(
        "--k-estimator",
        choices=K_ESTIMATORS,
        help="with auto: the criterion (default: the best measured)",
    )


def _k_options(args: argparse.Namespace) -> tuple[Any, tuple[int, int] | None]:
    """(K: a number or 'auto', the --k-range) from the parsed flags."""
    from deepclust.choose_k import parse_k

    k = parse_k(str(args.k if args.command == "cluster" else args.clusters))
    if k != "auto" and (args.k_range or args.k_estimator):
        raise DeepclustError("--k-range and --k-estimator apply only with --k auto.")
    if not args.k_range:
        return k, None
    from deepclust.cluster.k_estimation import parse_k_range

    return k, parse_k_range(args.k_range)


def _cluster_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "cluster",
        parents=[common],
        help="group a folder of photos (no labels needed): run folder, CSV, report",
        description="Cluster every image under PHOTOS (recursively; any size or mode) with the "
        "best frozen recipe: IMC-SwAV heads on EfficientNet-Lite2 features, then self-labelling. "
        "Sub-folders are albums; with --labels-from-folders they are classes the clusters are "
        "scored against (never used to fit).",
    )
    p.add_argument("photos", metavar="PHOTOS", help="folder of images")
    p.add_argument(
        "--k",
        default="auto",
        help="number of clusters, or auto (default): estimated from the features, no labels",
    )
    _k_auto_arguments(p)
    p.add_argument(
        "--out", metavar="RUN_DIR", help="run folder (default runs/<folder>-clusters-<time>)"
    )
    p.add_argument(
        "--export",
        action="store_true",
        help="RUN_DIR/clusters/<id>/: links to each cluster's photos",
    )
    p.add_argument("--copy", action="store_true", help="with --export: copies instead of links")
    p.add_argument(
        "--image-size",
        type=int,
        help="stored side in px (default: the photos' median shorter side, at most 224)",
    )
    p.add_argument("--method", default="imc-swav", help="method of the frozen recipe")
    p.add_argument(
        "--encoder",
        help="frozen encoder (default efficientnet_lite2): a short name such as dinov2-s or "
        "clip-b32, or timm:/open_clip:/hf:<model> (deepclust list encoders)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--no-report", action="store_true", help="skip RUN_DIR/report.html")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the killed run in --out, then write its report (and export)",
    )
    p.add_argument(
        "--labels-from-folders",
        action="store_true",
        help="the first-level sub-folders are classes: score the clusters against them "
        "(never used to fit); without it sub-folders are just albums and nothing is scored",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key")
    p.set_defaults(func=cmd_cluster)


def _recut_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = _run_parser(sub, common, "recut", "the same run at another K, in seconds, no training")
    p.add_argument("--k", type=int, required=True, help="the new number of clusters")
    p.add_argument("--out", metavar="NEW_RUN_DIR", help="new run folder (default RUN_DIR-k<N>)")
    p.add_argument("--export", action="store_true", help="NEW_RUN_DIR/clusters/<id>/: links")
    p.add_argument("--copy", action="store_true", help="with --export: copies instead of links")
    p.add_argument("--no-report", action="store_true", help="skip NEW_RUN_DIR/report.html")
    p.set_defaults(func=cmd_recut)


def _scoring_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The commands that read one run folder: evaluate, predict, shift, report."""
    p = _run_parser(sub, common, "evaluate", "score a run folder against labels")
    _split_arguments(
        p,
        ["test", "train", "all", "both"],
        "images to score (default: the run's evaluation split); both: the run's evaluation and "
        "the other side of the fit (train->test runs: test and train; train+test runs: "
        "train+test and its test part), each labelled",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _data_dir_flag(p)
    p.set_defaults(func=cmd_evaluate)
    p = _run_parser(sub, common, "predict", "cluster new images with a trained run")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--out", default="predictions.csv", metavar="FILE.csv")
    p.add_argument("--fail-on-bad-images", action="store_true", help="stop at an unreadable image")
    p.add_argument(
        "--features",
        action="store_true",
        help="also write encoder features, float32 [N, D], to <out stem>.features.npy",
    )
    _force_flag(p)
    p.set_defaults(func=cmd_predict)
    p = _run_parser(sub, common, "shift", "score a run on corrupted copies of its evaluation split")
    p.add_argument(
        "--corruptions", nargs="+", metavar="NAME", help=f"default all: {', '.join(CORRUPTIONS)}"
    )
    p.add_argument("--severities", default="1,2,3,4,5", help="e.g. 1,3,5 or 1-5")
    p.add_argument("--seed", type=int, default=0, help="seed of the random corruptions")
    p.add_argument("--max-images", type=int, help="evaluate on a fixed random subset")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _data_dir_flag(p)
    p.set_defaults(func=cmd_shift)
    p = _run_parser(sub, common, "report", "write a self-contained HTML report of a run")
    p.add_argument("--out", metavar="FILE.html", help="default RUN_DIR/report.html")
    p.add_argument("--embedding", choices=["pca", "tsne"], default="pca")
    p.add_argument(
        "--per-cluster", type=int, default=12, help="typical photos shown open per cluster"
    )
    p.add_argument("--max-points", type=int, default=2000, help="points in the embedding plot")
    _split_arguments(p, ["run", "both"], "both: also score the other split")
    _data_dir_flag(p)
    _force_flag(p)
    p.set_defaults(func=cmd_report)


def _export_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="RUN_DIR/clusters/<id>/: links to (or copies of) each cluster's photos",
        description="Write a run's export, or complete an interrupted one (entries already "
        "right are kept).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--copy", action="store_true", help="copies instead of links")
    p.add_argument("--redo", action="store_true", help="remove the existing export first")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not undo `deepclust --no-progress CMD`
    common.add_argument(
        "--no-progress", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    common.add_argument(
        "--max-pixels",
        type=int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="skip images of more pixels (default 89,478,485)",
    )
    parser = argparse.ArgumentParser(
        prog="deepclust", description="Deep image clustering.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"deepclust {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _cluster_parser(sub, common)
    _train_parser(sub, common)
    _scoring_parsers(sub, common)
    p = sub.add_parser(
        "select", parents=[common], help="rank runs (seeds, variants) without labels"
    )
    p.add_argument("run_dirs", nargs="+", help="run folders, or a --seeds folder")
    p.add_argument(
        "--criterion", choices=CRITERIA, help="default: consensus for 3+ runs, else views"
    )
    p.add_argument("--max-images", type=int, default=2000, help="evaluation images used")
    p.add_argument("--out", metavar="FILE.json", help="default: selection.json next to the runs")
    p.add_argument(
        "--no-labels", action="store_true", help="skip the comparison with the best-by-labels"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="auto", choices=DEVICES)
    _data_dir_flag(p)
    _force_flag(p)
    p.set_defaults(func=cmd_select)
    _export_parser(sub, common)
    _recut_parser(sub, common)
    p = sub.add_parser("list", parents=[common], help="list methods, datasets, encoders or configs")
    p.add_argument("what", choices=["methods", "datasets", "encoders", "configs"])
    p.set_defaults(func=cmd_list)
    p = sub.add_parser(
        "demo", parents=[common], help="cluster scikit-learn's digits on the CPU (no download)"
    )
    p.add_argument("--out", default="runs/demo", metavar="RUN_DIR")
    p.set_defaults(func=cmd_demo)
    sub.choices["train"].set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; expected errors print one line (exit 2, Ctrl-C 130), bugs a traceback (1)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "no_progress", False):
        progress.disable_all()
    if hasattr(args, "max_pixels"):  # read where images are opened (config.max_pixels)
        from deepclust.config import MAX_PIXELS_ENV

        os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)
    progress.one_line_notes()
    try:
        with command(args.command):  # messages name this command's flags
            return args.func(args)
    except (Exception, KeyboardInterrupt) as e:  # the one top-level handler
        return report_failure(e)


if __name__ == "__main__":
    sys.exit(main())
