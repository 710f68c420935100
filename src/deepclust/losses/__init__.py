"""Losses as small pure functions, one idea each, correct when the batch is split over processes."""

from deepclust.losses.common import entropy, float32_maths, soft_cross_entropy
from deepclust.losses.consensus import (
    align_partition,
    consensus_loss,
    cosine_scores,
    gaussian_projections,
    projected_scores,
)
from deepclust.losses.grouping import (
    assign_groups,
    enqueue,
    group_contrast_loss,
    moved_group_centres,
    update_group_centres,
)
from deepclust.losses.mutual_information import (
    information_objective,
    joint_distribution,
    logit_penalty,
    mutual_information_loss,
)
from deepclust.losses.nce import (
    info_nce_loss,
    memory_bank_scores,
    nce_loss,
    nce_normaliser,
    sample_negatives,
    softmax_nce_loss,
    update_memory_bank,
)
from deepclust.losses.prototype import class_sums, prototype_aggregation_loss
from deepclust.losses.sinkhorn import sinkhorn
from deepclust.losses.swav import swapped_prediction

__all__ = [
    "align_partition",
    "assign_groups",
    "class_sums",
    "consensus_loss",
    "cosine_scores",
    "enqueue",
    "entropy",
    "float32_maths",
    "gaussian_projections",
    "group_contrast_loss",
    "info_nce_loss",
    "information_objective",
    "joint_distribution",
    "logit_penalty",
    "memory_bank_scores",
    "moved_group_centres",
    "mutual_information_loss",
    "nce_loss",
    "nce_normaliser",
    "projected_scores",
    "prototype_aggregation_loss",
    "sample_negatives",
    "sinkhorn",
    "soft_cross_entropy",
    "softmax_nce_loss",
    "swapped_prediction",
    "update_group_centres",
    "update_memory_bank",
]
