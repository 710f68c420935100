"""The Python front door: train, evaluate and predict. The CLI is a thin layer over this.

from deepclust import api
cfg = api.make_config("kmeans", "digits", overrides={"data.protocol": "all"})
result = api.train(cfg, out="runs/digits")
print(api.evaluate("runs/digits")["acc"])

The practitioner's verbs on a folder of photos (cluster, recut, export, the scikit-learn
estimator DeepClusterer) live one layer up, in deepclust.practice, which calls this facade
and is never imported by it.

One module per verb: runs.py (make_config, resume_config, load_run and the run folder's
files), training.py (train, train_seeds), evaluation.py, prediction.py, selection.py,
robustness.py (shift), reporting.py (report) and clustering.py (estimate_k). This facade is
the public surface; its names do not move.
"""

from deepclust.api.clustering import estimate_k
from deepclust.api.evaluation import evaluate, evaluate_protocols
from deepclust.api.prediction import features_path, predict
from deepclust.api.reporting import report
from deepclust.api.robustness import shift
from deepclust.api.runs import (
    LoadedRun,
    default_run_dir,
    load_run,
    make_config,
    protocol_label,
    read_cluster_names,
    resume_config,
    seed_dirs,
)
from deepclust.api.selection import expand_run_dirs, label_free_scores, select
from deepclust.api.training import SeedsResult, train, train_seeds
from deepclust.training.records import RunResult

__all__ = [
    "LoadedRun",
    "RunResult",
    "SeedsResult",
    "default_run_dir",
    "estimate_k",
    "evaluate",
    "evaluate_protocols",
    "expand_run_dirs",
    "features_path",
    "label_free_scores",
    "load_run",
    "make_config",
    "predict",
    "protocol_label",
    "read_cluster_names",
    "report",
    "resume_config",
    "seed_dirs",
    "select",
    "shift",
    "train",
    "train_seeds",
]
