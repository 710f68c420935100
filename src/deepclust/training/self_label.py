"""The self-labelling stage any method's heads can end with (SCAN, Sec. 3.3), in feature space.

After training, the heads that `Method.predict_proba` uses are fine-tuned on their own
confident predictions: each step, a batch of the fit set's clean cached features (the weak
view) is predicted without gradient; samples above `self_label.threshold` become labelled
with their cluster, and a strong view of the same samples must predict that label
(losses/self_label.py, class-balanced). Images are not re-encoded, so the strong view is
made in feature space: noise of `noise` times each dimension's std, dropout of feature
dimensions, and a mix with a random other sample by a weight up to `mix` (the sample's
own features keep most of the weight, so its label stays). Adam, constant learning rate,
as SCAN's self-labelling.

Under torch.distributed each process takes its slice of every global batch; the class
weights and the loss normaliser are global, and gradients are summed over processes, so
two processes compute what one does. Randomness is drawn for the global batch, keyed by
(seed, epoch, batch).
"""

from __future__ import annotations

import time

import torch

from deepclust.config import RunConfig, SelfLabelConfig
from deepclust.data.views import batch_generator
from deepclust.engine.distributed import all_reduce_sum
from deepclust.engine.frozen import FrozenFeatures
from deepclust.engine.sampler import epoch_batches
from deepclust.errors import ConfigError
from deepclust.losses.self_label import self_label_loss
from deepclust.methods.base import Method


def strong_feature_view(
    features: torch.Tensor,
    partners: torch.Tensor,
    scale: torch.Tensor,
    cfg: SelfLabelConfig,
    gen: torch.Generator,
    global_batch: int,
    rows: slice,
) -> torch.Tensor:
    """features, partners [b, D] (this process's `rows` of a global batch), scale [D] ->
    the strong view [b, D]: mixed with the partner, noised, then dimensions dropped."""
    dim = features.shape[1]
    weight = cfg.mix * torch.rand(global_batch, 1, generator=gen)[rows]
    noise = torch.randn(global_batch, dim, generator=gen)[rows]
    keep = torch.rand(global_batch, dim, generator=gen)[rows] >= cfg.dropout
    weight, noise, keep = (t.to(features.device) for t in (weight, noise, keep))
    mixed = (1 - weight) * features + weight * partners
    noisy = mixed + cfg.noise * scale * noise
    return noisy * keep / max(1 - cfg.dropout, 1e-6)


def head_parameters(method: Method) -> list[torch.nn.Parameter]:
    """The parameters the stage trains: every trainable one outside the encoder."""
    return [
        p for n, p in method.named_parameters() if p.requires_grad and not n.startswith("encoder.")
    ]


@torch.no_grad()
def clusters_used(method: Method, features: torch.Tensor, batch: int = 4096) -> int:
    """How many clusters the method's prediction on features [N, D] gives any sample."""
    method.eval()
    predicted = torch.cat(
        [
            method.predict_proba(features[i : i + batch]).argmax(1)
            for i in range(0, len(features), batch)
        ]
    )
    return int(predicted.unique().numel())


def self_label(
    method: Method, features: FrozenFeatures, cfg: RunConfig, rank: int, world: int
) -> dict[str, float]:
    """Run `cfg.self_label.epochs` epochs of self-labelling on the clean fit features.

    Self-training can empty clusters (the confident samples of a few clusters take over);
    a stage after which the prediction uses fewer clusters than before it is undone: the
    heads from before the stage are kept (`undone` in the returned stats, which also hold
    the stage's mean loss, the share of confident samples in its last epoch, the clusters
    used before and after, and its seconds). The check reads no label.
    """
    if not head_parameters(method):
        raise ConfigError(
            f"method '{cfg.method}' has no trainable heads for self_label to fine-tune: "
            "set self_label.epochs to 0."
        )
    clean = features.fit[0]
    before = clusters_used(method, clean)
    snapshot = {k: v.detach().clone() for k, v in method.state_dict().items()}
    stats = run_stage(method, features, cfg, rank, world)
    after = clusters_used(method, clean)
    undone = after < before
    if undone:
        method.load_state_dict(snapshot)
    return {**stats, "clusters_before": before, "clusters_after": after, "undone": undone}


def run_stage(
    method: Method, features: FrozenFeatures, cfg: RunConfig, rank: int, world: int
) -> dict[str, float]:
    """The stage's epochs: -> its mean loss, last epoch's confident share and seconds."""
    sl = cfg.self_label
    params = head_parameters(method)
    clean = features.fit[0]
    n = len(clean)
    global_batch = min(sl.batch_size, n) // world * world
    optimizer = torch.optim.Adam(params, lr=sl.lr, weight_decay=sl.weight_decay)
    t0, losses, confident = time.time(), [], 0.0
    method.train()
    for e in range(sl.epochs):
        epoch = cfg.train.epochs + e  # after the training epochs: its own permutations
        batches = epoch_batches(n, global_batch, cfg.train.seed, epoch, rank, world)
        seen = 0.0
        for i, idx in enumerate(batches):
            idx = idx.to(clean.device)
            gen = batch_generator(cfg.train.seed, epoch, i, stream="self_label")
            partners = torch.randint(n, (global_batch,), generator=gen)
            rows = slice(rank * len(idx), (rank + 1) * len(idx))
            strong = strong_feature_view(
                clean[idx],
                clean[partners[rows].to(clean.device)],
                features.scale,
                sl,
                gen,
                global_batch,
                rows,
            )
            with torch.no_grad():
                p_weak = method.predict_proba(clean[idx])
            log_p = method.predict_proba(strong).clamp_min(1e-12).log()
            if not log_p.requires_grad:
                raise ConfigError(
                    f"method '{cfg.method}' predicts with nothing self_label can train (e.g. "
                    "k-means centroids on a target network): set self_label.epochs to 0."
                )
            loss, count = self_label_loss(p_weak, log_p, sl.threshold, sl.balance)
            if count.item() == 0:
                # nothing to learn: a step would only apply Adam's weight decay, which
                # shrinks the heads towards one cluster (measured: TEMI, ConCURL)
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for p in params:
                if p.grad is not None:
                    all_reduce_sum(p.grad)
            optimizer.step()
            losses.append(all_reduce_sum(loss.detach().clone()).item())
            seen += count.item()
        confident = seen / (len(batches) * global_batch)
    return {
        "loss": sum(losses) / max(len(losses), 1),
        "confident_share": round(confident, 4),
        "seconds": round(time.time() - t0, 2),
    }
