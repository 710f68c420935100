"""SIC's semantic space, centres, pseudo-labels and objective (Cai et al., AAAI 2023).

Every embedding here is L2-normalised (rows of unit length), so a dot product is a cosine.

    semantic space  T = image-centre filter (union of the gamma_r nouns nearest each k-means
                    image centre) AND uniqueness filter (cos(noun, mean noun) < 1 - gamma_u)
    image centre    v_c = normalize(mean of f_i over the floor(xi_c N / K) samples of highest p_ic)
    semantic centre h_c = normalize(mean of the xi_a nouns of T nearest v_c)
    pseudo-label    y_i = argmax_c <f_i, h_c>
    objective       -(1/B) sum_i log <p_i, p_n(i)>  -  lambda H(mean_i p_i)  +  beta CE(z_i, y_i)

The balance entropy is over the global batch (all-reduced with gradient); the other two
terms are per-sample means, which DDP's gradient average already makes global.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepclust.engine.distributed import all_reduce_sum_grad
from deepclust.losses.common import entropy


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16/fp16 under autocast widened; float64 kept for gradient checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def nearest_rows(queries: torch.Tensor, keys: torch.Tensor, top: int) -> torch.Tensor:
    """queries [Q, D], keys [T, D] (unit rows) -> indices [Q, min(top, T)] of the most similar keys."""
    return (queries.float() @ keys.float().T).topk(min(top, keys.shape[0]), dim=1).indices


def image_centre_filter(centres: torch.Tensor, nouns: torch.Tensor, gamma_r: int) -> torch.Tensor:
    """centres [K, D], nouns [T, D] -> bool [T]: the union of the gamma_r nouns nearest each centre."""
    keep = torch.zeros(nouns.shape[0], dtype=torch.bool, device=nouns.device)
    keep[nearest_rows(centres, nouns, gamma_r).flatten()] = True
    return keep


def uniqueness_filter(
    nouns: torch.Tensor, gamma_u: float, values: torch.Tensor | None = None
) -> torch.Tensor:
    """nouns [T, D] -> bool [T]: cos(noun, normalised mean noun) < 1 - gamma_u.

    A noun close to the mean of the whole vocabulary is close to everything and so tells
    clusters apart badly ("object", "thing"). values [T, D]: the rows averaged (default
    the unit nouns; the authors average raw text embeddings).
    """
    rows = nouns if values is None else values
    mean = F.normalize(rows.float().mean(dim=0), dim=0)
    return nouns.float() @ mean < 1.0 - gamma_u


def semantic_space(
    centres: torch.Tensor,
    nouns: torch.Tensor,
    gamma_r: int,
    gamma_u: float,
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """centres [K, D], nouns [T, D] -> indices [S] (ascending) of the nouns in both filters
    (values: the rows the uniqueness filter averages, see uniqueness_filter)."""
    keep = image_centre_filter(centres, nouns, gamma_r) & uniqueness_filter(nouns, gamma_u, values)
    return keep.nonzero().flatten()


def confident_image_centres(
    features: torch.Tensor, scores: torch.Tensor, xi_c: float
) -> torch.Tensor:
    """features [N, D], scores [N, K] -> image centres v [K, D] (unit rows).

    v_c is the normalised mean feature of the floor(xi_c * N / K) samples (at least one)
    with the highest score for cluster c (its probability, or the head's logit as the
    authors' code ranks); a sample may serve several clusters.
    """
    n, k = scores.shape
    m = max(1, min(n, int(xi_c * n / k)))
    top = scores.float().topk(m, dim=0).indices  # [m, K]
    return F.normalize(features.float()[top].mean(dim=0), dim=1)


def semantic_centres(
    image_centres: torch.Tensor,
    space: torch.Tensor,
    xi_a: int,
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """image centres [K, D], semantic space [S, D] -> h [K, D]: normalised mean of each
    centre's xi_a nearest nouns (of `values`' rows when given: the authors' raw embeddings)."""
    near = nearest_rows(image_centres, space, xi_a)  # [K, xi_a]
    rows = space if values is None or not len(values) else values
    return F.normalize(rows.float()[near].mean(dim=1), dim=1)


def semantic_pseudo_labels(features: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """features [B, D], semantic centres [K, D] -> int64 [B]: argmax_c <f_i, h_c>."""
    return (features.float() @ centres.float().T).argmax(dim=1)


def neighbour_consistency(
    probs: torch.Tensor, neighbour_probs: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """-(1/B) sum_i log <p_i, p_n(i)>: probs, neighbour_probs [B, K] -> scalar (0 for B = 0)."""
    agreement = (_wide(probs) * _wide(neighbour_probs)).sum(dim=1)
    return -agreement.clamp_min(eps).log().sum() / max(agreement.numel(), 1)


def balance_entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(mean_i p_i) over the global batch: probs [B, K] -> scalar (natural log, at most log K)."""
    probs = _wide(probs)
    sums = all_reduce_sum_grad(torch.cat([probs.sum(dim=0), probs.new_full((1,), len(probs))]))
    return entropy(sums[:-1] / sums[-1].clamp_min(1.0))


def sic_losses(
    logits: torch.Tensor,
    neighbour_logits: torch.Tensor,
    pseudo_labels: torch.Tensor,
    entropy_weight: float = 5.0,
    pseudo_weight: float = 0.1,
) -> dict[str, torch.Tensor]:
    """SIC's three terms, weighted, from head logits [B, K] of samples and of their neighbours.

    consistency = -(1/B) sum log <p_i, p_n(i)>; balance = -lambda H(mean p);
    pseudo = beta CE(z_i, y_i). Their sum is the objective.
    """
    logits, neighbour_logits = _wide(logits), _wide(neighbour_logits)
    p = torch.softmax(logits, dim=1)
    p_nb = torch.softmax(neighbour_logits, dim=1)
    ce = F.cross_entropy(logits, pseudo_labels, reduction="sum") / max(len(logits), 1)
    return {
        "consistency": neighbour_consistency(p, p_nb),
        "balance": -entropy_weight * balance_entropy(p),
        "pseudo": pseudo_weight * ce,
    }
