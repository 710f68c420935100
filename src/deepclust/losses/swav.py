"""SwAV's swapped prediction: predict one view's code from another view's scores."""

from __future__ import annotations

import torch


def swapped_prediction(
    scores: torch.Tensor, codes: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Mean over pairs (i, v != i) of mean_b CE(codes[i]_b, softmax(scores[v]_b / temperature)).

    scores [V, B, P]: every view's scores against the prototypes (with gradient);
    codes [T, B, P]: the targets (e.g. Sinkhorn assignments, no gradient) of views 0..T-1,
    T <= V. Averaged over the T * (V - 1) pairs, not summed. The batch mean is over this
    process's rows: averaging gradients over processes (DDP) gives the global-batch gradient.
    """
    num_views, num_codes = scores.shape[0], codes.shape[0]
    if num_codes > num_views or num_views < 2:
        raise ValueError(
            f"need 2+ views and at most as many codes; got {num_views} and {num_codes}"
        )
    log_p = torch.log_softmax(scores.float() / temperature, dim=-1)  # [V, B, P]
    ce = -torch.einsum("tbp,vbp->tv", codes.float(), log_p) / scores.shape[1]  # [T, V]
    off_diagonal = ~torch.eye(num_codes, num_views, dtype=torch.bool, device=ce.device)
    return ce[off_diagonal].mean()
