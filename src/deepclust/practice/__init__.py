"""The practitioner's verbs on a folder of photos, above the api they call (never imported by it).

    from deepclust import practice
    result = practice.cluster("photos/")                # `deepclust cluster` (k="auto")
    practice.recut(result.run_dir, k=8)                 # the same run at another K, seconds
    practice.export(result.run_dir)                     # folders of links per cluster
    model = practice.DeepClusterer(k=8).fit("photos/")  # scikit-learn style

folder.py (cluster: the default frozen recipe, resume), recut.py and finish.py (another K
from a finished run), export.py (folders per cluster), estimator.py (DeepClusterer).
"""

from deepclust.practice.estimator import DeepClusterer
from deepclust.practice.export import export_clusters as export
from deepclust.practice.folder import ClusterResult
from deepclust.practice.folder import cluster_folder as cluster
from deepclust.practice.recut import recut_run as recut

__all__ = ["ClusterResult", "DeepClusterer", "cluster", "export", "recut"]
