"""The practitioner's verbs on a folder of photos, above the api they call (never imported by it).

    from deepclust import practice
    result = practice.cluster("photos/")                # `deepclust cluster` (k="auto")
    practice.recut(result.run_dir, k=8)                 # the same run at another K, seconds
    practice.export(result.run_dir)                     # folders of links per cluster
    model = practice.DeepClusterer(k=8).fit("photos/")  # scikit-learn style

folder.py (cluster: the default frozen recipe, resume), recutting.py and finish.py (another K
from a finished run), exporting.py (folders per cluster), estimator.py (DeepClusterer).
"""

from importlib import import_module
from typing import Any

# name -> (module, attribute): imported on first use, so `deepclust recut` does not pay for
# scikit-learn's estimator machinery (seconds of start-up on 2 cores)
_NAMES = {
    "ClusterResult": ("deepclust.practice.folder", "ClusterResult"),
    "DeepClusterer": ("deepclust.practice.estimator", "DeepClusterer"),
    "cluster": ("deepclust.practice.folder", "cluster_folder"),
    "export": ("deepclust.practice.exporting", "export_clusters"),
    "recut": ("deepclust.practice.recutting", "recut_run"),
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'deepclust.practice' has no attribute '{name}'")
    module, attribute = _NAMES[name]
    return getattr(import_module(module), attribute)
