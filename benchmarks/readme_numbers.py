"""The README's measured numbers, rendered from the benchmarks' JSON so they cannot go stale.

README.md holds blocks between `<!-- numbers:NAME -->` and `<!-- /numbers -->`; each is the
output of RENDERERS[NAME] on its JSON in benchmarks/results/. After re-running a benchmark:

    python benchmarks/readme_numbers.py          # rewrite the blocks in README.md
    python benchmarks/readme_numbers.py --check  # exit 1 if a block differs (tests run this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- numbers:(\S+) -->\n)(.*?)(<!-- /numbers -->)", re.S)


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def demo() -> str:
    d = _load("demo_digits.json")
    rows = [
        f"| {r['label']} | {r['acc']:.3f} | {r['nmi']:.3f} | {r['ari']:.3f} | {r['seconds']:.0f} s |"
        for r in d["rows"]
    ]
    return "\n".join(
        [
            "| `deepclust demo` | ACC | NMI | ARI | time |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"scikit-learn digits (1,797 images), train+test, 1 seed, {d['device']}, load "
            f"{d['load_before'].split()[0]} (`python benchmarks/demo.py`).",
        ]
    )


def photo_folder() -> str:
    d = _load("photo_folder_cifar10_test.json")
    full, subsets, cmds = d["full"], d["subsets"], d.get("commands", {})
    lines = [
        "| run | ACC | NMI | ARI | time | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (
        ("cold", "first run (features extracted)"),
        ("warm", "again (features cached)"),
    ):
        r = full[name]
        lines.append(
            f"| `cluster` 10k photos, {label} | {r['acc']:.3f} | {r['nmi']:.3f} | {r['ari']:.3f} "
            f"| {r['seconds'] / 60:.1f} min | {r['peak_rss_gib']:.2f} GiB |"
        )
    lines += [
        "",
        "| photos (3 random subsets) | default recipe, mean ACC | k-means, same features | warnings |",
        "|---|---|---|---|",
    ]
    for size, s in subsets.items():
        warned = sum(len(r["default"]["summary_warnings"]) for r in s["runs"])
        lines.append(
            f"| {int(size):,} | {s['mean_acc']['default']:.3f} | {s['mean_acc']['kmeans']:.3f} | {warned} |"
        )
    k_auto = d.get("k_auto")
    if k_auto:
        chosen = {
            f"{int(size):,} photos": ", ".join(
                str(v["modularity"]) for f, v in k_auto.items() if f.startswith(f"sub{size}-")
            )
            for size in subsets
        }
        chosen["10k photos"] = str(k_auto["flat"]["modularity"])
        lines += [
            "",
            "With `--k auto` (the default) on the same folders, K chosen (true K 10): "
            + "; ".join(f"{name}: {ks}" for name, ks in chosen.items())
            + ". The estimate undershoots on CIFAR's 10 classes: give `--k` when you know it.",
        ]
    before = d.get("before", {})
    if cmds:
        lines += [
            "",
            "| command on the frozen runs | time | peak RSS | before (commit 95b17a7) |",
            "|---|---|---|---|",
        ]
        labelled = cmds.get("evaluate_labelled", {}).get("images", 0)
        for key, label in (
            ("predict_20", "`predict` 20 photos (10k run)"),
            ("report", "`report` (10k run)"),
            ("evaluate_labelled", f"`evaluate` ({labelled:,}-image labelled run)"),
        ):
            if key in cmds:
                was = before.get(key)
                old = f"{was['seconds']:.0f} s, {was['peak_rss_gib']:.1f} GiB" if was else "–"
                lines.append(
                    f"| {label} | {cmds[key]['seconds']:.0f} s | {cmds[key]['peak_rss_gib']:.2f} GiB | {old} |"
                )
    lines += [
        "",
        f"{d['dataset_copy']}; {d['protocol']}; EfficientNet-Lite2 @ 224 px, frozen; seed 0; "
        f"{d['device']} (`python benchmarks/photo_folder.py`).",
    ]
    return "\n".join(lines)


def frozen() -> str:
    d = _load("frozen_cifar10_test_efficientnet_lite2_224px.json")
    lines = [
        "| method on frozen features | ACC | NMI | ARI | clustering time |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(d["results"], key=lambda r: -r["acc"]["mean"]):
        lines.append(
            f"| {r['method']} | {r['acc']['mean']:.3f} ± {r['acc']['std']:.3f} | {r['nmi']['mean']:.3f} "
            f"| {r['ari']['mean']:.3f} | {r['clustering_s']['mean']:.0f} s |"
        )
    seeds = len(d["seeds"])
    lines += [
        "",
        f"{d['dataset']}; {d['protocol']}; {d['encoder']} @ {d['input_size']} px; mean ± std of "
        f"{seeds} seeds; {d['device']}; 20-NN majority vote with the true labels "
        f"{d['knn20_majority_vote_acc']:.3f} (`python benchmarks/frozen_features.py --encoder "
        f"{d['encoder']} --input-size {d['input_size']} --seeds 0,1,2`).",
    ]
    return "\n".join(lines)


PEERS = {
    "CIFAR-10": "frozen_peers_quiet_cifar10_test_efficientnet_lite2_224px.json",
    "Fashion-MNIST": "frozen_peers_quiet_fashion_test_efficientnet_lite2_224px.json",
}


def _cell(row: dict | None, planned: int) -> str:
    if row is None:
        return "– | –"
    acc, nmi, ari = (row[m]["mean"] for m in ("acc", "nmi", "ari"))
    seeds = len(row["runs"])
    spread = f" ± {row['acc']['std']:.3f}" if seeds > 1 else ""
    spread += "" if seeds == planned else f" ({seeds} seed{'s' if seeds > 1 else ''})"
    return f"{acc:.3f}{spread} / {nmi:.3f} / {ari:.3f} | {row['clustering_s']['mean']:.0f} s"


BUDGET_S = 120  # the frozen-feature budget rule (docs/results.md)

# Runs on another encoder (TURTLE's several representation spaces), one row each
PEERS_OTHER_ENCODERS = {
    "CIFAR-10": "frozen_peers_quiet_cifar10_test_turtle_efficientnet_lite0+efficientnet_lite2_224px.json",
    "Fashion-MNIST": "frozen_peers_quiet_fashion_test_turtle_efficientnet_lite0+efficientnet_lite2_224px.json",
}


# The papers' own schedules where one run fits in 10 minutes here, one row each
PEERS_PAPER_SCHEDULES = {
    "CIFAR-10": "frozen_peers_paper_cifar10_test_scan_efficientnet_lite2_224px.json",
    "Fashion-MNIST": "frozen_peers_paper_fashion_test_scan_efficientnet_lite2_224px.json",
}
PAPER = "paper's schedule"


def _peers(name: str) -> dict:
    """One dataset's sweep, with the rows of its runs on other encoders named by encoder and
    those under a paper's own schedule named so."""
    d = _load(PEERS[name])
    other = RESULTS / PEERS_OTHER_ENCODERS[name]
    if other.is_file():
        extra = json.loads(other.read_text())["results"]
        d["results"] += [{**r, "method": f"{r['method']} on {r['encoder']}"} for r in extra]
    paper = RESULTS / PEERS_PAPER_SCHEDULES[name]
    if paper.is_file():
        part = json.loads(paper.read_text())
        d["results"] += [{**r, "method": f"{r['method']}, {PAPER}"} for r in part["results"]]
        if part["device"] != d["device"]:
            d.setdefault("parts", []).append(PEERS_PAPER_SCHEDULES[name])
    return d


def _other_devices(d: dict) -> list[str]:
    """'method: device' for the parts of a merged sweep measured on another device."""
    notes = []
    for part in d.get("parts", []):
        p = _load(part)
        if p["device"] != d["device"]:
            tag = f", {PAPER}" if part in PEERS_PAPER_SCHEDULES.values() else ""
            methods = ", ".join(sorted({r["method"] + tag for r in p["results"]}))
            notes.append(f"{methods}: {p['device']}")
    return notes


def frozen_peers() -> str:
    """Every method with and without self-labelling on both datasets (benchmarks/frozen_features.py)."""
    data = {name: _peers(name) for name in PEERS}
    keys: list[tuple[str, bool]] = []
    for d in data.values():
        keys += [
            (r["method"], r["self_label"])
            for r in d["results"]
            if (r["method"], r["self_label"]) not in keys
        ]
    head = " | ".join(f"{name} ACC / NMI / ARI | time" for name in data)
    lines = [
        f"| method | self-labelling | within {BUDGET_S} s | {head} |",
        "|---|---|---" + "|---|---" * len(data) + "|",
    ]
    first = next(iter(data.values()))
    order = {(r["method"], r["self_label"]): -r["acc"]["mean"] for r in first["results"]}
    for method, relabel in sorted(keys, key=lambda k: order.get(k, 0.0)):
        cells, seconds = [], []
        for d in data.values():
            row = next(
                (r for r in d["results"] if (r["method"], r["self_label"]) == (method, relabel)),
                None,
            )
            planned = 1 if method in d.get("once", []) else len(d["seeds"])
            cells.append(_cell(row, planned))
            seconds += [row["clustering_s"]["mean"]] if row else []
        why = "" if method.endswith(PAPER) else "; not re-run"
        fits = "yes" if max(seconds) <= BUDGET_S else f"no ({max(seconds):.0f} s{why})"
        lines.append(f"| {method} | {'yes' if relabel else 'no'} | {fits} | {' | '.join(cells)} |")
    notes = "; ".join(
        f"{name}: {d['dataset']}, 20-NN vote with the true labels {d['knn20_majority_vote_acc']:.3f}, "
        f"load average {_load_range(d)}"
        for name, d in data.items()
    )
    elsewhere = sorted({note for d in data.values() for note in _other_devices(d)})
    if elsewhere:
        notes += "; rows re-run on another machine (times comparable only roughly): " + "; ".join(
            elsewhere
        )
    lines += [
        "",
        f"{first['protocol']}; {first['encoder']} @ {first['input_size']} px, frozen; mean ± std "
        f"over seeds {', '.join(map(str, first['seeds']))} (spectral and agglomerative: seed 0, "
        "deterministic given the features); "
        "self-labelling: "
        f"{first['self_label_epochs']} epochs, scored on the same runs before and after the stage; "
        f"time: clustering once the features are cached (self-labelling rows: with the "
        f"stage), {first['device']}, one run at a time ({notes}). Budget: at most "
        f"{BUDGET_S} s of clustering a run at 10,000 images on 2 cores (the rule in "
        "`docs/results.md`, written before TEMI's re-run); the papers' own schedules fit in "
        "10 minutes here for none of the trained heads (TEMI's 50 heads x 100 epochs: over an "
        "hour; TURTLE's 6,000 steps of 10,000: ~25 min) except SCAN's: its rows "
        f"'{PAPER}' run 50 epochs of batch 128 at Adam 1e-4, and the self-labelling stage 200 "
        "epochs at 1e-4 (SCAN's clustering and self-labelling steps, on the frozen features). "
        "`python benchmarks/frozen_features.py` (commands in `docs/results.md`).",
    ]
    return "\n".join(lines)


def _load_range(d: dict) -> str:
    loads = [
        float(run["loadavg_before"].split()[0])
        for r in d["results"]
        for run in r["runs"]
        if run["loadavg_before"][:1].isdigit()  # runs read back from their folder have none
    ]
    return f"{min(loads):.1f}-{max(loads):.1f} before the runs" if loads else "not recorded"


def k_estimation() -> str:
    d = _load("k_estimation.json")
    cases = d["cases"]
    head = " | ".join(f"{c['case']} (true {c['true_k']})" for c in cases)
    lines = [f"| estimator | {head} | NMI lost | time |", "|---" * (len(cases) + 3) + "|"]
    for name in sorted(d["overall"], key=lambda n: d["overall"][n]["mean_nmi_loss"]):
        ks = " | ".join(", ".join(map(str, c["summary"][name]["k_per_seed"])) for c in cases)
        o = d["overall"][name]
        star = " (default)" if name == d["default_estimator"] else ""
        lines.append(
            f"| {name}{star} | {ks} | {o['mean_nmi_loss']:.3f} | {o['mean_seconds']:.0f} s |"
        )
    lines += [
        "",
        f"K chosen per seed ({', '.join(map(str, d['seeds']))}) over K = {d['k_range'][0]}..{d['k_range'][1]}; "
        "NMI lost: mean NMI of k-means with the true K minus with the chosen K; labels only to "
        f"score; {d['device']} (`python benchmarks/k_estimation.py`; cases and encoders in "
        "`benchmarks/results/k_estimation.json`).",
    ]
    return "\n".join(lines)


def k_suite() -> str:
    """The K suite (benchmarks/k_suite.py): per pool and estimator, how often K is right and
    what the chosen K costs; the label-free quality against ACC; the candidates on dev."""
    d = _load("k_suite.json")
    lines = [
        "| pool | estimator | cases | K exact | within 1 | mean K error | ACC chosen K | ACC true K "
        "| NMI chosen K | NMI true K | time |",
        "|---" * 11 + "|",
    ]
    for pool, p in d["pools"].items():
        for name, s in p["summary"].items():
            star = " (default)" if name == d["default_estimator"] else ""
            lines.append(
                f"| {pool} | {name}{star} | {s['cases']} | {s['exact']:.0%} | {s['within_1']:.0%} "
                f"| {s['mean_error']:+.2f} | {s['acc_chosen_k']:.3f} | {s['acc_true_k']:.3f} "
                f"| {s['nmi_chosen_k']:.3f} | {s['nmi_true_k']:.3f} | {s['mean_seconds']:.1f} s |"
            )
    cand = _load("k_suite_candidates_dev.json")["summary"]
    best = sorted(cand, key=lambda n: (-cand[n]["within_1"], -cand[n]["exact"]))[:4]
    tried = "; ".join(f"{n} {cand[n]['exact']:.0%} / {cand[n]['within_1']:.0%}" for n in best)
    q = [(pool, p["quality"]) for pool, p in d["pools"].items()]
    quality = "; ".join(
        f"{pool}: Spearman {v['spearman_quality_acc']:.2f} over {v['runs']} runs, warned on "
        f"{v['warned_of_those']} of {v['runs_acc_under_0.5']} runs with ACC < 0.5 and on "
        f"{v['warned_with_acc_0.5_or_more']} others; ECE of the softmax confidence "
        f"{v['ece_softmax_mean']:.3f}, of the agreement {v['ece_agreement_mean']:.3f}"
        for pool, v in q
    )
    lines += [
        "",
        f"{d['sources']}; {d['encoder']}; {len(next(iter(d['pools'].values()))['cases'])} "
        "cases a pool (K = 2..10 per source, balanced and imbalanced 10:1, mixtures of the "
        "three with K = 20, 25, 30, each source whole), 90 to 2,500 images a case; K tried "
        f"2..min(50, N/10); scored with {d['clustering_scored']}; labels only to score; "
        f"{d['device']} (`python benchmarks/k_suite.py`). Candidates on the dev pool (exact / "
        f"within 1; all in `benchmarks/results/k_suite_candidates_dev.json`): {tried}. "
        f"Label-free quality of the chosen partitions: {quality}.",
    ]
    return "\n".join(lines)


def recut() -> str:
    """`recut` against a fresh `cluster` at the same K, and the two per-photo numbers' ECE."""
    d = _load("recut_cifar10_test.json")
    b = d["base"]
    lines = [
        "| run | K | ACC | NMI | time | ECE confidence | ECE agreement |",
        "|---|---|---|---|---|---|---|",
        f"| `cluster --k {b['k']}` (the base run) | {b['k']} | {b['acc']:.3f} | {b['nmi']:.3f} "
        f"| | {b['ece_confidence']:.3f} | {b['ece_agreement']:.3f} |",
    ]
    for r in d["recut"]:
        c, f = r["recut"], r.get("fresh")
        lines.append(
            f"| `recut --k {r['k']}` | {r['k']} | {c['acc']:.3f} | {c['nmi']:.3f} "
            f"| {r['recut_no_report_s']:.0f} s ({r['recut_s']:.0f} s with its report) "
            f"| {c['ece_confidence']:.3f} | {c['ece_agreement']:.3f} |"
        )
        if f:
            lines.append(
                f"| fresh `cluster --k {r['k']}` | {r['k']} | {f['acc']:.3f} | {f['nmi']:.3f} "
                f"| {r['fresh_s']:.0f} s | {f['ece_confidence']:.3f} | {f['ece_agreement']:.3f} |"
            )
    lines += [
        "",
        "CIFAR-10 (JPEG copy) test, 10,000 photos in their class folders, clustered without "
        "--labels-from-folders and scored by the benchmark against the folder names; "
        f"{d['recipe']}; times are whole commands (start-up, loading, the cut or the "
        "training on cached features, predictions, summary; none writes a report unless said); "
        "ECE: 15 bins, against the photo's class being its cluster's majority class; "
        f"{d['device']} (`python benchmarks/recut.py --fresh`).",
    ]
    return "\n".join(lines)


NAMING = {
    "CIFAR-10 test": "naming_cifar10_test.json",
    "Fashion-MNIST test": "naming_fashion_test.json",
}


def naming() -> str:
    """How often a cluster's offline name is its majority class or a hypernym of it
    (benchmarks/naming.py)."""
    lines = [
        "| dataset | clusters | named by a synonym / hypernym of the majority class | examples (name: majority class) | naming time |",
        "|---|---|---|---|---|",
    ]
    for label, name in NAMING.items():
        d = _load(name)
        rows = d["rows"]
        good = [r for r in rows if r["relation"] in ("synonym", "hypernym")]
        bad = [r for r in rows if r not in good]
        shown = [f"{r['name']}: {r['majority_class']}" for r in good[:2] + bad[:2]]
        lines.append(
            f"| {label} ({d['photos']:,} photos) | {len(rows)} | {len(good)} of {len(rows)} "
            f"({d['score']['strict']:.0%}) | {'; '.join(shown)} | {d['naming_seconds']:.1f} s |"
        )
    first = _load(next(iter(NAMING.values())))
    lines += [
        "",
        f"{first['encoder']} (its ImageNet classifier), clusters: {first['clusters']}; a name "
        "counts when its WordNet synset is the majority class's own or a hypernym of it "
        "(classes mapped to synsets by hand in the script; labels only score); temperature "
        f"{first['temperature']} and threshold {first['threshold']} chosen on CIFAR-10 train "
        "photos (`python benchmarks/naming.py`, commands in its docstring).",
    ]
    return "\n".join(lines)


def report_page() -> str:
    """Size and render time of a 10,000-photo report (benchmarks/report_size.py)."""
    d = _load("report_10k.json")
    page, before, ch = d["page"], d["before"], d["chromium_s"]
    return "\n".join(
        [
            "| report of a 10,000-photo run | page size | `deepclust report` | Chromium screenshot | Chromium, every fold open |",
            "|---|---|---|---|---|",
            f"| every photo ({page['photos_drawn']:,} thumbnails in {page['sprites']} sprites) "
            f"| {page['html_mb']:.1f} MB | {min(d['report_command_s']):.0f} s "
            f"| {ch['page_screenshot']:.1f} s | {ch['all_open_screenshot']:.1f} s |",
            f"| before (12 photos per cluster) | {before['html_bytes'] / 1e6:.1f} MB "
            f"| {min(before['report_command_s']):.0f} s | {ch['before_screenshot']:.1f} s | |",
            "",
            f"CIFAR-10 (JPEG copy) test folder, {d['run']}; whole `report` command (best of 3); "
            f"headless Chromium with a fresh profile ({ch['empty_screenshot']:.1f} s of it is "
            f"Chromium's own start-up), median of 3; {d['device']}, load average "
            f"{d['loadavg_before'].split()[0]} (`{d['command']}`).",
        ]
    )


def _gib(d: dict) -> str:
    return f"{d['peak_rss_gib']:.1f} GiB"


def scale() -> str:
    """The large-collection measurements (benchmarks/scale.py), one row per part."""
    part = {name: _load(f"scale_{name}.json") for name in SCALE_PARTS}
    knn, km, heads = part["knn"], part["kmeans"], part["heads"]
    bare, killed, resumed = part["cifar-bare"], part["cifar-killed"], part["cifar-resumed"]
    best = bare["images_per_s_best_round"]
    rows = [
        (
            f"20-NN graph, 1M x 1,280 synthetic float16 features (faiss IVF, {knn['nprobe']} of "
            f"{knn['nlist']:,} lists probed)",
            f"{knn['seconds'] / 60:.1f} min; recall@20 {knn['recall_at_20_independent_sample']:.3f} "
            f"against exact search on {knn['queries']:,} other queries",
            _gib(knn),
        ),
        (
            f"k-means, K = {km['k']:,}, same rows (faiss, {km['iterations']} iterations)",
            f"{km['seconds'] / 60:.1f} min; NMI {km['nmi_vs_generating_centres']:.3f} against "
            "the generating centres",
            _gib(km),
        ),
        (
            f"frozen IMC-SwAV heads, K = {heads['clusters']:,}, same rows read memory-mapped",
            f"{heads['measured']['seconds'] / heads['steps_run']:.2f} s a step of "
            f"{heads['schedule']['batch_size']}: one epoch ({heads['steps_in_full_epoch']:,} "
            f"steps) {heads['full_epoch_seconds_extrapolated'] / 60:.0f} min, extrapolated "
            f"from {heads['steps_run']} steps",
            _gib(heads),
        ),
        (
            f"feature extraction, Lite0 @ 128 px, {bare['images']:,} CIFAR-10 images",
            f"{best['deepclust']:.0f} images/s; a bare timm loop doing the same job "
            f"{best['bare_same_job']:.0f}, its forward alone {best['bare_forward']:.0f} "
            f"(deepclust at {bare['deepclust_vs_bare_same_job']:.0%} of the same job)",
            _gib(bare),
        ),
        (
            f"`cluster` on {killed['images']:,} CIFAR-10 JPEGs in one folder, Lite0 @ 128 px, "
            "killed (SIGKILL) during extraction",
            f"killed at {killed['seconds'] / 60:.0f} min with {killed['killed_with_chunks_saved']} "
            "of 30 feature chunks saved",
            _gib(killed),
        ),
        (
            "the same command again",
            f"resumed at the saved chunks and finished in {resumed['seconds'] / 60:.1f} min "
            f"(exit {resumed['exit_code']}); extraction {resumed['extraction_images_per_s']:.0f} "
            f"images/s over both runs; ACC {resumed['scores']['acc']:.3f} / NMI "
            f"{resumed['scores']['nmi']:.3f}",
            _gib(resumed),
        ),
    ]
    lines = ["| what | result | peak RSS |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    loads = sorted(float(part[n]["loadavg_start"].split()[0]) for n in SCALE_PARTS)
    lines += [
        "",
        f"{knn['machine']['cpu']}, {knn['machine']['threads']} threads, no GPU; load average "
        f"{loads[0]:.1f}-{loads[-1]:.1f} at the start of the parts; train+test, seed 0; peak "
        "RSS counts the memory-mapped pages a process read (`python benchmarks/scale.py "
        "--parts ...`; plan for 10M images in `docs/scale.md`).",
    ]
    return "\n".join(lines)


SCALE_PARTS = ("knn", "kmeans", "heads", "cifar-bare", "cifar-killed", "cifar-resumed")


RENDERERS: dict[str, Callable[[], str]] = {
    "demo": demo,
    "photo_folder": photo_folder,
    "frozen": frozen,
    "frozen_peers": frozen_peers,
    "k_estimation": k_estimation,
    "k_suite": k_suite,
    "recut": recut,
    "naming": naming,
    "report": report_page,
    "scale": scale,
}


def rendered(text: str) -> str:
    """README text with every block replaced by its renderer's output."""

    def sub(m: re.Match) -> str:
        return f"{m.group(1)}{RENDERERS[m.group(2)]()}\n{m.group(4)}"

    return BLOCK.sub(sub, text)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = rendered(text)
    if args.check:
        if new != text:
            print(
                "README.md numbers differ from benchmarks/results: run benchmarks/readme_numbers.py"
            )
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
