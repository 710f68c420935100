"""The Method interface: heads + the views it needs + a training step + epoch hooks + predict.

A method never touches devices, files or data loading: the engine hands it views and a
`FitContext` (for whole-dataset passes such as k-means E-steps) and asks for losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from deepclust.data.views import ViewSpec
from deepclust.encoders.base import Encoder
from deepclust.registry import Registry

if TYPE_CHECKING:
    from deepclust.engine.context import FitContext


@dataclass(frozen=True)
class StepInfo:
    """Where the training loop is: epochs and steps count from 0."""

    epoch: int
    step: int  # global optimisation step
    epoch_step: int
    steps_per_epoch: int
    total_steps: int
    indices: torch.Tensor | None = (
        None  # [B] fit-set indices of this process's batch (memory banks, pseudo-labels)
    )
    # views [b,3,s,s] (or features [b,D]) of this step's auxiliary batch (`auxiliary_stream`)
    auxiliary: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class AuxiliaryStream:
    """A second batch stream beside the epoch's: one batch of these fit-set rows every step.

    The engine draws it (sharded over processes like the main batch), renders the method's
    views of it and hands them to `training_step` as `info.auxiliary`.
    """

    rows: torch.Tensor  # [M] fit-set indices the stream draws from
    batch_size: int  # global batch size of the stream


class Method(nn.Module):
    """Base class. Subclasses set `name`, `Params` (a dataclass) and override what they need."""

    name: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, params: Any, encoder: Encoder, num_clusters: int, num_samples: int) -> None:
        """num_samples: size of the fit set (for per-sample state such as memory banks)."""
        super().__init__()
        self.params = params
        self.encoder = encoder
        self.num_clusters = num_clusters
        self.num_samples = num_samples

    # --- training -------------------------------------------------------------------
    def view_spec(self) -> ViewSpec | None:
        """The views each training batch needs; None if the method has no gradient training."""
        return None

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> dict[str, torch.Tensor]:
        """views: spec.num_views tensors [B,3,s,s] -> named scalar losses (their sum is minimised)."""
        raise NotImplementedError(f"{self.name} has no gradient training")

    def forward(self, views: list[torch.Tensor], info: StepInfo) -> dict[str, torch.Tensor]:
        """The engine calls the module (so DistributedDataParallel can sync gradients)."""
        return self.training_step(views, info)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups; a group may carry 'lr_scale' (multiplies the base lr)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def before_optimizer_step(self, info: StepInfo) -> None:
        """After backward, before the step (e.g. zero prototype gradients during warm-up)."""

    def after_optimizer_step(self, info: StepInfo) -> None:
        """After the step (e.g. re-normalise prototypes, EMA updates)."""

    def auxiliary_stream(self, ctx: FitContext) -> AuxiliaryStream | None:
        """A second batch of other fit-set rows every step (e.g. labelled images only), or None."""
        return None

    def learning_phases(self, total_steps: int, steps_per_epoch: int) -> dict[str, int]:
        """Phases at the start of a run (a sentence naming it -> its length in steps) during
        which part of the method does not learn yet; read by the run-health checks."""
        return {}

    def on_train_start(self, ctx: FitContext) -> None:
        """Once, before the first epoch (also on resume)."""

    def on_epoch_start(self, ctx: FitContext) -> None:
        """Before each epoch: E-steps over the whole dataset go here."""

    def on_train_end(self, ctx: FitContext) -> None:
        """After the last epoch: e.g. fit k-means on the final features."""

    def before_evaluate(self, ctx: FitContext) -> None:
        """Before each evaluation during training (e.g. refresh k-means centroids used by predict)."""

    # --- inference ------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] normalised -> encoder features [B,D].

        Cached features [B,D] of a frozen encoder pass through unchanged, so a method that
        always starts from `self.features(view)` trains on images and on frozen features alike.
        """
        return x if x.ndim == 2 else self.encoder(x)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """state_dict without a frozen encoder's weights (they are rebuilt from the config)."""
        state = self.state_dict()
        if not self.encoder.trainable:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        return state

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        from deepclust.errors import CheckpointError

        missing, unexpected = self.load_state_dict(state, strict=False)
        wrong = [
            k for k in missing if self.encoder.trainable or not k.startswith("encoder.")
        ] + list(unexpected)
        if wrong:
            raise CheckpointError(
                f"the checkpoint does not fit method '{self.name}' (mismatched keys: {', '.join(wrong[:5])}); "
                "was it written by another method, encoder or number of clusters?"
            )

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] normalised -> cluster probabilities [B,K]."""
        raise NotImplementedError

    def cluster_names(self) -> list[list[str]] | None:
        """Words describing each cluster, best first (K lists), or None; asked after training."""
        return None


METHODS: Registry[type[Method]] = Registry("method")
