"""Issue 29, group A: what deepclust writes. Nothing through links, never a photo, no
formula cells, no user's hidden file swept, tampered run files in one line, an atomic
report, a refused pickle in one line. One test (or a few) per item."""

from __future__ import annotations

import csv
import json
import resource
import shutil
import signal
from pathlib import Path

import pytest
import torch

import toy_method  # noqa: F401  (registers the test-only method "toy")
from deepclust import api
from deepclust.cli import main
from deepclust.engine import checkpoint as ckpt
from deepclust.errors import RunFolderError
from deepclust.evaluation.predictions import read_predictions_csv
from deepclust.practice.exporting import export_clusters

TOY = {
    "encoder.name": "pixels",
    "data.protocol": "all",
    "train.epochs": 1,
    "train.batch_size": 256,
    "train.optimizer.lr": 0.01,
    "train.progress": False,
}
# photo names a spreadsheet would take for formulas (and "-1.png", a legitimate name)
FORMULA_NAMES = ["=cmd|calc!A1.png", "-1.png", "+sum.png", "@at.png"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, separable_images):
    """The separable images, a few renamed to formula-like names."""
    root = tmp_path_factory.mktemp("photos") / "data"
    shutil.copytree(separable_images, root)
    first = sorted((root / "red_hstripes").glob("*.png"))
    for path, name in zip(first, FORMULA_NAMES, strict=False):
        path.rename(path.with_name(name))
    return root


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory, photos):
    """A kmeans run on the photos (pixels encoder), exported as links to the photos."""
    out = tmp_path_factory.mktemp("runs") / "km"
    argv = ["train", "--method", "kmeans", "--dataset", "imagefolder", "--data-dir", photos]
    argv += ["--protocol", "all", "--encoder", "pixels", "--out", out, "--no-progress"]
    assert main([str(a) for a in argv]) == 0
    export_clusters(out)
    return out


@pytest.fixture
def run_copy(photo_run, tmp_path):
    """A copy of photo_run to tamper with (its export left out)."""
    copy = tmp_path / "run"
    shutil.copytree(photo_run, copy, ignore=shutil.ignore_patterns("clusters"))
    return copy


# ------------------------------------------------------------------ 1. no writes through links


def test_1_a_lock_link_is_refused_and_its_target_kept(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".deepclust.lock").symlink_to(victim)
    with pytest.raises(RunFolderError, match=r"\.deepclust\.lock' is a symbolic link"):
        api.train(api.make_config("toy", "digits", overrides=TOY), out=out)
    assert victim.read_text() == "precious"


def test_1_resume_replaces_links_and_keeps_their_targets(tmp_path):
    out = tmp_path / "run"
    api.train(api.make_config("toy", "digits", overrides=TOY), out=out)
    victims = {}
    for name in ("metrics.jsonl", "summary.json", "predictions.csv", "cluster_names.json"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text(f"my own {name}\n")
        (out / name).unlink(missing_ok=True)
        (out / name).symlink_to(victims[name])
    cfg = api.resume_config(out, overrides={"train.epochs": 2})
    with pytest.raises(RunFolderError, match=r"metrics\.jsonl' is a symbolic link"):
        api.train(cfg, out=out, resume=True)  # appended in place: a link there is refused
    (out / "metrics.jsonl").unlink()
    api.train(cfg, out=out, resume=True)  # written whole: a link there is replaced
    for name, victim in victims.items():
        assert victim.read_text() == f"my own {name}\n", name
    assert not (out / "summary.json").is_symlink()
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_1_k_estimate_and_report_replace_links(photo_run, run_copy, tmp_path):
    from deepclust.choose_k import write_estimate

    victim = tmp_path / "victim.html"
    victim.write_text("mine")
    (run_copy / "report.html").symlink_to(victim)
    api.report(run_copy, device="cpu")
    assert victim.read_text() == "mine" and not (run_copy / "report.html").is_symlink()

    class Estimate:
        def as_dict(self):
            return {"k": 4}

    (run_copy / "k_estimate.json").symlink_to(victim)
    write_estimate(run_copy, Estimate())
    assert victim.read_text() == "mine"


# ------------------------------------------------------------------ 2. --force never hits a photo


def test_2_force_never_overwrites_a_photo(photo_run, photos, capsys):
    photo = sorted((photos / "blue_checker").glob("*.png"))[3]
    before = photo.read_bytes()
    code, _, err = run(capsys, "predict", photo_run, photos, "--out", photo, "--force")
    assert "is an image file" in one_line_error(code, err) and photo.read_bytes() == before
    link = next(p for p in sorted((photo_run / "clusters").rglob("*.png")) if p.is_symlink())
    target = link.resolve()
    before = target.read_bytes()
    code, _, err = run(capsys, "report", photo_run, "--out", link, "--force")
    assert "image file" in one_line_error(code, err) and target.read_bytes() == before
    # any file in the export folder, image or not
    notes = link.parent / "notes.html"
    code, _, err = run(capsys, "report", photo_run, "--out", notes, "--force")
    assert "export folder" in one_line_error(code, err) and not notes.exists()


# ------------------------------------------------------------------ 3. formula injection


def test_3_csv_cells_are_never_formulas_and_paths_round_trip(
    photo_run, photos, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "p.csv"
    monkeypatch.chdir(photos / "red_hstripes")  # predict writes the paths as given
    code, _, err = run(capsys, "predict", photo_run, "--out", out, "--", *FORMULA_NAMES)
    assert code == 0, err
    for csv_file in (photo_run / "predictions.csv", out):
        with open(csv_file, newline="") as fh:
            cells = [c for row in csv.reader(fh) for c in row]
        formulas = [c for c in cells if c[:1] in ("=", "+", "@") or c.startswith("-1.png")]
        assert not formulas, formulas
        names = {Path(r["path"]).name for r in read_predictions_csv(csv_file)}
        assert set(FORMULA_NAMES) <= names  # the guard is stripped again on reading
        assert all(Path(r["path"]).is_file() for r in read_predictions_csv(csv_file))
    exported = {p.name for p in (photo_run / "clusters").rglob("*") if p.is_symlink()}
    assert set(FORMULA_NAMES) <= exported
    assert all(p.exists() for p in (photo_run / "clusters").rglob("*.png"))


def test_3_a_guard_round_trips_every_text():
    from deepclust.evaluation.predictions import guard_cell, unguard_cell

    for text in ["=1+1", "-1.jpg", "'-1.jpg", "''=x", "'plain", "plain", "", "\tx", "@a"]:
        guarded = guard_cell(text)
        assert guarded[:1] not in ("=", "+", "-", "@", "\t", "\r")
        assert unguard_cell(guarded) == text
    assert guard_cell(-1) == -1  # numbers stay numbers


# ------------------------------------------------------------------ 6. only our temporary files


def test_6_a_users_hidden_tmp_file_survives(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    notes = out / ".notes.tmp-2024"
    notes.write_text("my notes")
    code, _, err = run(
        capsys, "train", "--method", "kmeans", "--dataset", "digits", "--out", out,
        "--no-progress", "--set", "params.n_init=1",
    )  # fmt: skip
    assert code == 2 and ".notes.tmp-2024" in err and notes.read_text() == "my notes"
    api.train(api.make_config("toy", "digits", overrides=TOY), out=tmp_path / "run")
    ours = tmp_path / "run" / ".last.pt.tmp-99999"
    theirs = tmp_path / "run" / ".notes.tmp-2024"
    ours.write_bytes(b"x")
    theirs.write_text("my notes")
    cfg = api.resume_config(tmp_path / "run", overrides={"train.epochs": 2})
    api.train(cfg, out=tmp_path / "run", resume=True)
    assert not ours.exists() and theirs.read_text() == "my notes"


# ------------------------------------------------------------------ 12. tampered run files


def _edit_json(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _edit_csv(path: Path, field: str, value: str) -> None:
    rows = list(csv.DictReader(path.open(newline="")))
    rows[5][field] = value
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


TAMPERED = {
    "summary-not-json": ("summary.json", lambda p: p.write_text("{oops"), "not valid JSON"),
    "summary-wall-time": ("summary.json", lambda p: _edit_json(p, wall_time_s="slow"), "wall_time_s"),
    "summary-metrics": ("summary.json", lambda p: _edit_json(p, metrics={"acc": "high"}), "metrics.acc"),
    "predictions-cluster": ("predictions.csv", lambda p: _edit_csv(p, "cluster", "x"), "cluster"),
    "predictions-confidence": ("predictions.csv", lambda p: _edit_csv(p, "confidence", "abc"), "confidence"),
    "names-key": ("cluster_names.json", lambda p: p.write_text('{"cats": "cat"}'), "key"),
    "estimate-shape": ("k_estimate.json", lambda p: p.write_text('{"k": 3}'), "estimator"),
    "estimate-curve": (
        "k_estimate.json",
        lambda p: p.write_text(json.dumps({
            "k": 3, "estimator": "e", "criterion": "c", "higher_is_better": True,
            "seconds": 1.0, "curve": {"three": 1.0},
        })),
        "curve",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_12_tampered_run_files_are_one_line(run_copy, capsys, case):
    name, tamper, field = TAMPERED[case]
    tamper(run_copy / name)
    code, _, err = run(capsys, "report", run_copy, "--device", "cpu")
    line = one_line_error(code, err)
    assert name in line and field in line, line


def test_12_tampered_names_fail_evaluate_and_predict_in_one_line(
    run_copy, photos, tmp_path, capsys
):
    (run_copy / "cluster_names.json").write_text('{"0": "a", "one": "b"}')
    for argv in (
        ["evaluate", run_copy],
        ["predict", run_copy, photos, "--out", tmp_path / "p.csv"],
    ):
        line = one_line_error(*run(capsys, *argv)[::2])
        assert "cluster_names.json" in line and "'one'" in line, line


def test_12_a_huge_num_clusters_is_refused_before_allocating(run_copy, capsys):
    state = torch.load(run_copy / ckpt.LAST, weights_only=True)
    state["meta"]["num_clusters"] = 10**9
    torch.save(state, run_copy / ckpt.LAST)
    (run_copy / ckpt.PREVIOUS).unlink(missing_ok=True)
    line = one_line_error(*run(capsys, "evaluate", run_copy)[::2])
    assert "meta.num_clusters" in line, line


# ------------------------------------------------------------------ 16. report.html atomically


def test_16_a_report_cut_short_leaves_the_old_one_whole(photo_run, run_copy, monkeypatch):
    from deepclust.evaluation import report as rep

    old = "<!DOCTYPE html><title>deepclust report: the old one</title>"
    (run_copy / "report.html").write_text(old)
    render = rep.render_html
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def full_after_4k(data):  # the disk fills (or the process dies) while the page is written
        page = render(data)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
        return page

    monkeypatch.setattr(rep, "render_html", full_after_4k)
    try:
        with pytest.raises(OSError):
            api.report(run_copy, device="cpu")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert (run_copy / "report.html").read_text() == old
    assert not [p.name for p in run_copy.iterdir() if ".tmp-" in p.name]


# ------------------------------------------------------------------ 18. a refused pickle


def test_18_a_refused_pickle_is_one_line_without_torchs_advice(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    torch.save({"format": ckpt.FORMAT_VERSION, "payload": print}, tmp_path / "run" / ckpt.LAST)
    line = one_line_error(*run(capsys, "evaluate", tmp_path / "run")[::2])
    assert "refused" in line and "weights_only=False" not in line and "it names print" in line
