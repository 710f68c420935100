"""Label-free selection criteria, their independence from labels, and seed aggregation."""

import json

import numpy as np
import pytest
import torch

import toy_method  # registers the test-only method "toy"
from deepclust import api
from deepclust.data.store import ImageSet
from deepclust.evaluation import seeds, selection
from deepclust.evaluation.selection import Candidate, agreement, consensus, rank

pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest: one torch thread


def test_agreement_identical_permuted_random():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, 5000)
    assert agreement(a, a) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    perm = rng.permutation(10)
    assert agreement(a, perm[a])["ari"] == pytest.approx(1.0)  # ids do not matter
    b = rng.integers(0, 10, 5000)
    random = agreement(a, b)
    assert abs(random["ari"]) < 0.01 and random["nmi"] < 0.01


def test_consensus_by_hand():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, 3000)
    r = rng.integers(0, 5, 3000)
    scores = consensus([a, a.copy(), r])
    nmi_ar = agreement(a, r)["nmi"]
    assert scores[0] == pytest.approx((1.0 + nmi_ar) / 2)
    assert scores[2] == pytest.approx(nmi_ar)
    assert scores[0] > scores[2]
    assert consensus([a]) == [None]


def test_balance_and_degenerate_last():
    k = 4
    even = np.repeat(np.arange(k), 50)
    collapsed = np.zeros(200, dtype=int)
    assert selection.balance(even, k)["balance"] == pytest.approx(1.0)
    rows = selection.score_candidates(
        [
            Candidate("collapsed", collapsed, k, view_clusters=(collapsed, collapsed)),
            Candidate("even", even, k, view_clusters=(even, np.roll(even, 7))),
        ]
    )
    assert rows[0]["views"] == pytest.approx(1.0) and rows[0]["degenerate"]
    assert not rows[1]["degenerate"] and rows[1]["views"] < 1.0
    assert [rows[i]["name"] for i in rank(rows, "views")] == ["even", "collapsed"]


def test_rank_direction_and_comparison_with_labels():
    rows = [
        {"name": "a", "views": 0.5, "loss": 2.0, "consensus": 0.8},
        {"name": "b", "views": 0.7, "loss": 1.0, "consensus": 0.6},
        {"name": "c", "views": 0.6, "loss": 3.0, "consensus": 0.7},
    ]
    assert rank(rows, "views") == [1, 2, 0]
    assert rank(rows, "loss") == [1, 0, 2]  # lower is better
    metrics = [{"acc": 0.9, "nmi": 0.8, "ari": 0.7}, {"acc": 0.6}, {"acc": 0.8}]
    cmp = selection.compare_with_labels(rows, metrics)
    assert cmp["best_by_labels"]["name"] == "a"
    assert cmp["criteria"]["views"]["pick"] == "b"
    assert cmp["criteria"]["views"]["gap_acc"] == pytest.approx(0.3)
    assert cmp["criteria"]["views"]["pick_rank_by_labels"] == 3
    assert cmp["criteria"]["consensus"]["gap_acc"] == pytest.approx(0.0)
    assert cmp["criteria"]["consensus"]["spearman_with_labels"] == pytest.approx(1.0)
    assert selection.compare_with_labels(rows, [None, None, None]) is None
    with pytest.raises(ValueError, match="unknown criterion"):
        rank(rows, "accuracy")


def test_internal_indices_prefer_the_true_partition():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (3, 5))
    truth = np.repeat(np.arange(3), 100)
    feats = centres[truth] + rng.normal(0, 1, (300, 5))
    good = selection.internal_indices(feats, truth)
    bad = selection.internal_indices(feats, rng.integers(0, 3, 300))
    assert good["silhouette"] > 0.5 > bad["silhouette"]
    assert good["calinski_harabasz"] > 10 * bad["calinski_harabasz"]


def test_seed_aggregation_by_hand():
    runs = [
        {"seed": 0, "acc": 0.80, "nmi": 0.70, "ari": 0.60},
        {"seed": 1, "acc": 0.90, "nmi": 0.65, "ari": 0.70},
        {"seed": 2, "acc": 0.70, "nmi": 0.75, "ari": 0.50},
    ]
    agg = seeds.aggregate(runs)
    assert agg["mean"]["acc"] == pytest.approx(0.80)
    assert agg["std"]["acc"] == pytest.approx(0.10)  # sample std: sqrt((0.01+0+0.01)/2)
    assert agg["std"]["nmi"] == pytest.approx(0.05)
    assert agg["best"] == {"seed": 1, "acc": 0.90, "nmi": 0.65, "ari": 0.70}
    assert agg["max"]["nmi"] == pytest.approx(0.75)  # per-metric maximum: another run
    assert seeds.aggregate(runs[:1])["std"]["acc"] == 0.0
    assert "mean" not in seeds.aggregate([{"seed": 0, "acc": None, "nmi": None, "ari": None}])
    assert "best run (by ACC, seed 1)" in seeds.format_line(agg)


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """Two one-epoch runs of the trainable test method on digits (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("toy")
    overrides = {
        "encoder.name": "pixels",
        "data.protocol": "all",
        "train.epochs": 1,
        "train.batch_size": 256,
        "train.optimizer.lr": 0.01,
        "train.progress": False,
        "train.seed": 0,
    }
    cfg = api.make_config("toy", "digits", overrides=overrides)
    assert toy_method.Toy.name == "toy"
    return api.train_seeds(cfg, 2, out=root)


def test_criteria_never_read_labels(toy_runs):
    runs = [api.load_run(r.run_dir, "cpu") for r in toy_runs.runs]
    data = runs[0].load_split().subset(torch.arange(300))
    assert data.has_labels
    blank = ImageSet(data.images, torch.full((300,), -1), [], None, data.name)
    shuffled = ImageSet(data.images, data.labels[torch.randperm(300)], list(data.class_names))
    before = {k: v.clone() for k, v in runs[0].method.state_dict().items()}
    index = torch.arange(300)  # train+test protocol: these are fit images 0..299
    rows = [
        api.label_free_scores(runs, d, lambda run, d=d: (d, index)) for d in (data, blank, shuffled)
    ]
    assert rows[0] == rows[1] == rows[2]
    for row in rows[0]:
        assert row["views"] is not None and row["loss"] is not None
        assert row["silhouette"] is not None and row["consensus"] is not None
        assert "fit images" in row["loss_images"]
        assert "feature views" in row["loss_images"]  # 'pixels' is frozen: as in training
    after = runs[0].method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the loss used a copy


def test_runs_of_one_frozen_encoder_share_its_forward_passes(toy_runs, monkeypatch, tmp_path):
    """Scoring two runs of a frozen encoder costs its forward passes once, not twice, and
    gives the same scores as without the memory; with the feature cache on, scoring again
    costs no pass at all."""
    monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")  # the in-memory sharing alone
    calls = []

    class CountingFlatten(torch.nn.Flatten):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    def scored(n_runs: int, remember: bool) -> tuple[list[dict], int]:
        runs = [api.load_run(r.run_dir, "cpu") for r in toy_runs.runs][:n_runs]
        for run in runs:
            run.method.encoder.body = CountingFlatten()
            if not remember:
                run.method.encoder.identity = ""  # nothing to share a memory by
        data = runs[0].load_split().subset(torch.arange(300))
        index = torch.arange(300)
        calls.clear()
        rows = api.label_free_scores(runs, data, lambda run: (data, index))
        return rows, len(calls)

    one_rows, one = scored(1, remember=True)
    two_rows, two = scored(2, remember=True)
    _, one_plain = scored(1, remember=False)
    plain_rows, plain = scored(2, remember=False)
    assert plain == 2 * one_plain
    # the second run adds nothing; within one run, predictions and features share a pass
    assert two == one and 0 < one < one_plain
    assert two_rows == plain_rows
    assert {**two_rows[0], "consensus": None} == one_rows[0]  # consensus needs 2+ runs
    monkeypatch.delenv("DEEPCLUST_NO_CACHE")
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path))
    first_rows, first = scored(2, remember=False)
    again_rows, again = scored(2, remember=False)
    assert first == one and again == 0 and first_rows == again_rows == plain_rows


def test_select_ranks_and_compares(toy_runs, tmp_path):
    out = tmp_path / "sel.json"
    result = api.select([toy_runs.run_dir], criterion="loss", max_images=400, out=out)
    assert json.loads(out.read_text())["criterion"] == "loss"
    assert [r["rank"] for r in result["runs"]] == [1, 2]
    losses = [r["loss"] for r in result["runs"]]
    assert losses[0] <= losses[1]
    cmp = result["label_free_vs_labels"]
    assert set(cmp["criteria"]) >= {"views", "consensus", "silhouette", "loss"}
    assert all(c["gap_acc"] >= 0 for c in cmp["criteria"].values())
    summary = json.loads((toy_runs.run_dir / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and {"mean", "std", "best"} <= summary.keys()
    assert summary["label_free_pick"]["criterion"] == "views"
