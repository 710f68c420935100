"""Clustering methods, one file each, registered by name."""

from deepclust.methods import baselines as _baselines  # noqa: F401  (registers)
from deepclust.methods import concurl as _concurl  # noqa: F401  (registers)
from deepclust.methods import digpro as _digpro  # noqa: F401  (registers)
from deepclust.methods import imc_swav as _imc_swav  # noqa: F401  (registers)
from deepclust.methods import kmeans as _kmeans  # noqa: F401  (registers)
from deepclust.methods import scan as _scan  # noqa: F401  (registers)
from deepclust.methods import sic as _sic  # noqa: F401  (registers)
from deepclust.methods import temi as _temi  # noqa: F401  (registers)
from deepclust.methods import turtle as _turtle  # noqa: F401  (registers)
from deepclust.methods.base import METHODS, Method, StepInfo

__all__ = ["METHODS", "Method", "StepInfo"]
