"""The command line: the happy path and every bad input named in the foundation issue."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from deepclust.cli import main
from deepclust.evaluation.predictions import COLUMNS


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "km"
    assert (
        main(
            [
                "train",
                "--method",
                "kmeans",
                "--dataset",
                "digits",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    return out


def write_pngs(folder, n, size=8, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )


def test_train_evaluate_predict(digits_run, capsys, tmp_path):
    summary = json.loads((digits_run / "summary.json").read_text())
    assert summary["protocol"] == "all" and summary["metrics"]["acc"] > 0.6
    code, out, _ = run(capsys, "evaluate", str(digits_run), "--json")
    result = json.loads(out)
    assert code == 0 and {"acc", "nmi", "ari", "n", "split", "method"} <= result.keys()
    assert result["n"] == 1797 and result["split"] == "all" and result["method"] == "kmeans"
    assert result["acc"] == pytest.approx(summary["metrics"]["acc"])
    write_pngs(tmp_path / "new", 5)
    (tmp_path / "new" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match="1"):
        code, out, _ = run(
            capsys,
            "predict",
            str(digits_run),
            str(tmp_path / "new"),
            "--out",
            str(tmp_path / "p.csv"),
        )
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert code == 0 and len(rows) == 5 and list(rows[0]) == COLUMNS
    assert all(0 <= int(r["cluster"]) < 10 and 0 < float(r["confidence"]) <= 1 for r in rows)


def test_list(capsys):
    assert "kmeans" in run(capsys, "list", "methods")[1]
    out = run(capsys, "list", "datasets")[1]
    for name in (
        "cifar10",
        "cifar20",
        "stl10",
        "imagenet10",
        "imagenet_dogs",
        "tiny_imagenet",
        "imagefolder",
        "digits",
        "fashion_mnist",
    ):
        assert name in out
    assert "resnet50" in run(capsys, "list", "encoders")[1]


def test_python_dash_m():
    out = subprocess.run(
        [sys.executable, "-m", "deepclust", "list", "methods"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "kmeans" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--method", "kmeenz", "--dataset", "digits"], "Did you mean 'kmeans'"),
        (["--method", "kmeans", "--dataset", "cifar11"], "unknown dataset 'cifar11'"),
        (
            ["--method", "kmeans", "--dataset", "digits", "--encoder", "resnet7"],
            "unknown encoder 'resnet7'",
        ),
        (["--method", "kmeans", "--dataset", "digits", "--set", "train.lr=1"], "train.lr"),
        (["--method", "kmeans", "--dataset", "digits", "--clusters", "1"], "at least 2"),
        (
            ["--method", "kmeans", "--dataset", "digits", "--clusters", "5000"],
            "larger than the number",
        ),
        (
            ["--method", "kmeans", "--dataset", "digits", "--protocol", "train-test"],
            "--protocol all",
        ),
    ],
)
def test_bad_input_is_a_clear_error(capsys, tmp_path, argv, fragment):
    code, _, err = run(capsys, "train", *argv, "--out", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and fragment in err and "Traceback" not in err


def test_bad_data_dirs(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "train",
        "--method",
        "kmeans",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "r1"),
    )
    assert code == 2 and "nope" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(
        capsys,
        "train",
        "--method",
        "kmeans",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "empty"),
        "--out",
        str(tmp_path / "r2"),
    )
    assert code == 2 and ("empty" in err.lower() or "no images" in err.lower())
    write_pngs(tmp_path / "few", 3)
    code, _, err = run(
        capsys,
        "train",
        "--method",
        "kmeans",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "few"),
        "--clusters",
        "4",
        "--encoder",
        "pixels",
        "--protocol",
        "all",
        "--out",
        str(tmp_path / "r3"),
    )
    assert code == 2 and "larger than the number of training images (3)" in err


def test_unlabelled_folder_needs_k_then_clusters(capsys, tmp_path):
    write_pngs(tmp_path / "flat", 12)
    code, _, err = run(
        capsys,
        "train",
        "--method",
        "kmeans",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "flat"),
        "--encoder",
        "pixels",
        "--protocol",
        "all",
        "--out",
        str(tmp_path / "a"),
    )
    assert code == 2 and "--clusters" in err
    code, out, _ = run(
        capsys,
        "train",
        "--method",
        "kmeans",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "flat"),
        "--encoder",
        "pixels",
        "--protocol",
        "all",
        "--clusters",
        "3",
        "--out",
        str(tmp_path / "b"),
        "--no-progress",
    )
    assert code == 0 and "no labels to score" in out
    assert (tmp_path / "b" / "predictions.csv").read_text().count("\n") == 13


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_there_is_none(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "train",
        "--method",
        "kmeans",
        "--dataset",
        "digits",
        "--device",
        "cuda",
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2 and "--device cpu" in err


def test_resume_errors(capsys, digits_run, tmp_path):
    code, _, err = run(
        capsys, "train", "--resume", "--method", "toy_nonexistent", "--out", str(digits_run)
    )
    assert code == 2 and "not 'toy_nonexistent'" in err
    code, _, err = run(capsys, "train", "--resume", "--out", str(tmp_path / "none"))
    assert code == 2 and "not a deepclust run folder" in err
    code, _, err = run(capsys, "evaluate", str(tmp_path / "none"))
    assert code == 2 and "does not exist" in err


def test_demo(capsys, tmp_path, monkeypatch):
    from deepclust import demo

    # The real demo trains IMC-SwAV for 30 epochs (~1.5 min); 2 epochs check the wiring.
    short = [(label, m, {**o, "train.epochs": 2}) for label, m, o in demo.DEMO_RUNS]
    monkeypatch.setattr(demo, "DEMO_RUNS", short)
    code, out, _ = run(capsys, "demo", "--out", str(tmp_path / "demo"), "--no-progress")
    assert code == 0 and "ACC" in out and "k-means on pixels" in out and "IMC-SwAV" in out
    for method in ("kmeans", "imc-swav"):
        assert (tmp_path / "demo" / method / "summary.json").exists()


# --------------------------------------------------------------------------- evaluation (issue 10)


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """k-means on pixels of a small train/ + test/ image folder (protocol train->test)."""
    from conftest import make_separable_images

    root = tmp_path_factory.mktemp("splits")
    make_separable_images(root / "train", per_class=30, seed=0)
    make_separable_images(root / "test", per_class=10, seed=1)
    out = root / "run"
    argv = ["train", "--method", "kmeans", "--dataset", "imagefolder", "--data-dir", str(root)]
    assert main([*argv, "--encoder", "pixels", "--out", str(out), "--no-progress"]) == 0
    return out


def test_evaluate_both_protocols(split_run, digits_run, capsys, one_thread):
    code, out, _ = run(capsys, "evaluate", str(split_run), "--protocol", "both")
    assert code == 0
    assert "[train->test, split test, held out]" in out
    assert "[train->train (in-sample), split train]" in out
    code, out, _ = run(capsys, "evaluate", str(split_run), "--split", "both", "--json")
    evals = json.loads(out)["evaluations"]
    assert [(e["protocol"], e["split"], e["n"]) for e in evals] == [
        ("train->test", "test", 40),
        ("train->train (in-sample)", "train", 120),
    ]
    assert evals[0]["held_out"] and not evals[1]["held_out"]
    code, out, _ = run(capsys, "evaluate", str(digits_run), "--protocol", "both")
    assert code == 0 and "[train+test, split all]" in out and "single split" in out


def test_shift_json(split_run, capsys, one_thread):
    code, out, _ = run(
        capsys,
        *("shift", str(split_run), "--corruptions", "contrast", "jpeg"),
        *("--severities", "1,5", "--json"),
    )
    result = json.loads(out)
    assert code == 0 and result == json.loads((split_run / "shift.json").read_text())
    assert result["clean"]["protocol"] == "train->test" and result["n"] == 40
    assert [s["split"] for s in result["splits"]] == ["train", "test"]
    assert set(result["corruptions"]) == {"contrast", "jpeg"}
    cell = result["corruptions"]["contrast"]["5"]
    assert {"acc", "nmi", "ari"} <= cell.keys() and 0 <= cell["acc"] <= 1
    code, out, _ = run(
        capsys, "shift", str(split_run), "--corruptions", "jpeg", "--severities", "2"
    )
    assert code == 0 and "sev 2" in out and "jpeg" in out
    code, _, err = run(capsys, "shift", str(split_run), "--corruptions", "fog")
    assert code == 2 and "unknown corruption 'fog'" in err


def test_report(split_run, capsys, tmp_path, one_thread):
    target = tmp_path / "r.html"
    code, out, _ = run(capsys, "report", str(split_run), "--out", str(target), "--protocol", "both")
    page = target.read_text()
    assert code == 0 and str(target) in out
    assert "train-&gt;test" in page or "train→test" in page
    assert "train-&gt;train (in-sample)" in page  # --protocol both adds the train split
    assert 'id="shift"' in page and "http://" not in page


def test_train_seeds_then_select(capsys, tmp_path, one_thread):
    out_dir = tmp_path / "seeds"
    code, out, _ = run(
        capsys,
        *("train", "--method", "kmeans", "--dataset", "digits", "--seeds", "2"),
        *("--seed", "3", "--set", "params.n_init=2", "--out", str(out_dir), "--no-progress"),
    )
    assert code == 0 and "2 seeds" in out and "label-free pick" in out
    summary = json.loads((out_dir / "seeds.json").read_text())
    assert summary["seeds"] == [3, 4]
    assert (out_dir / "seed-3" / "summary.json").exists() and (out_dir / "seed-4").is_dir()
    accs = [r["acc"] for r in summary["runs"]]
    assert summary["mean"]["acc"] == pytest.approx(sum(accs) / 2)
    assert summary["std"]["acc"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    assert summary["best"]["acc"] == pytest.approx(max(accs))
    assert summary["label_free_pick"]["seed"] in (3, 4)
    code, out, _ = run(capsys, "select", str(out_dir), "--criterion", "silhouette")
    assert code == 0 and "pick:" in out and "with labels, for checking only" in out
    result = json.loads((out_dir / "selection.json").read_text())
    assert result["criterion"] == "silhouette" and len(result["runs"]) == 2


def test_predict_features(digits_run, capsys, tmp_path, one_thread):
    write_pngs(tmp_path / "imgs", 4)
    target = tmp_path / "p.csv"
    code, out, _ = run(
        capsys,
        "predict",
        str(digits_run),
        str(tmp_path / "imgs"),
        "--out",
        str(target),
        "--features",
    )
    feats = np.load(tmp_path / "p.features.npy")
    assert code == 0 and "p.features.npy" in out
    assert feats.shape == (4, 3 * 8 * 8) and feats.dtype == np.float32
