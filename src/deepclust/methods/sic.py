"""SIC: Semantic-enhanced Image Clustering (Cai, Qiu, Chen, Zhang, Chen; AAAI 2023, arXiv 2208.09849).

A linear head learns K clusters on the frozen features of a vision-language model (CLIP
ViT-B/32 in the paper), guided by the nouns of WordNet embedded by the model's text tower.

    f_i       normalize(image features), frozen, extracted once and cached     [N, D]
    nouns     WordNet nouns (params.vocabulary) as "a photo of a {noun}", unit   [T, D]
    T         semantic space, built once: spherical k-means (K, n_init 20) of f gives image
              centres; keep the union of the gamma_r = 500 nouns nearest each centre that
              also have cos(noun, mean noun) < 1 - gamma_u (gamma_u = 0.05)
    per epoch v_c = normalize(mean f of the floor(xi_c N / K) samples of highest p_ic), xi_c = 0.9
              h_c = normalize(mean of the xi_a = 30 nouns of T nearest v_c)
              y_i = argmax_c <f_i, h_c>
    z_i       head(f_i), one linear layer D -> K; p_i = softmax(z_i)
    loss      -(1/B) sum_i log <p_i, p_n(i)>  -  5 H(mean_i p_i)  +  0.1 CE(z_i, y_i),
              n(i) drawn uniformly from the 20 nearest neighbours of i in image space
              (exact cosine top-k over the fit set; 50 for Tiny-ImageNet)
    predict   argmax p_i; cluster c is named by the nouns of T nearest v_c

Image-only semantic space (`semantic_space: image`, or `auto` with an encoder that has no
text tower, e.g. efficientnet_lite0): the "nouns" are `image_anchors` = 1000 centroids of a
spherical k-means over-clustering of the fit set's own features; everything else is as
above, and clusters get no names. It is an image-space self-labelling, not SIC's semantic
guidance: a number measured on it says so (the run's config has `params.semantic_space`).

Where deepclust differs from the paper and the authors' code (github.com/Bruce-XJChen/SIC):
- The authors stop early on test-set accuracy and report the best epoch. deepclust trains
  the configured epochs and keeps the last; compare runs with `deepclust select`
  (label-free criteria) and read the per-epoch `loss` / `consistency` / `pseudo` in
  metrics.jsonl, never the logged ACC.
- The image centres of the semantic space come from spherical (cosine) k-means of the
  normalised features on the training device (cluster/spherical_kmeans.py), not from a
  Euclidean k-means; on unit vectors the two differ little.
- The uniqueness filter compares each noun with the mean embedding of the whole vocabulary;
  both filters are applied to the vocabulary and intersected.
- The authors' head sees the raw CLIP image features (norm about 10 for ViT-B/32), so its
  logits are that much larger at the same learning rate; `head_features: raw` (the paper
  configs) does the same, `normalised` (the default, and the CPU / frozen recipes) feeds
  the unit features. Neighbours, centres and pseudo-labels use unit features either way
  (the pseudo-label argmax does not depend on the feature's norm).
- The authors' per-epoch image centres (ComputeCenter) take, per cluster, the samples of
  highest head *logit* and average their *raw* features; the paper speaks of the most
  confident samples. `centre_ranking: logits` and `centre_features: raw` (the paper
  configs) do as the code; the defaults rank by probability and average unit features.
  On a random head the two rankings pick very different samples (benchmarks/equivalence/sic.py).
- The authors average the *raw* text embeddings of a semantic centre's xi_a nouns (and of
  the whole vocabulary in the uniqueness filter); deepclust's text embeddings are unit rows.
- The authors' neighbour lists hold the sample itself among its k + 1 entries (SCAN's
  mining); `neighbours_include_self: true` (the paper configs) draws n(i) from i and its
  k nearest neighbours, false from the k neighbours alone.
- No augmentation: the anchor is the cached clean feature (SIC configs set
  encoder.feature_noise: 0); neighbours are drawn per step from a stream keyed by
  (seed, step) for the global batch, so resume and multi-process runs are exact.
- Under torchrun H(mean p) is over the global batch (all-reduced with gradient); centres,
  neighbours and the semantic space are computed identically on every process.
- The label-free `loss` criterion of `deepclust select` runs the objective on held-out
  images, which have no fit-set neighbours: there n(i) is drawn from i's nearest
  neighbours within the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepclust.cluster import spherical_kmeans, stream_seed
from deepclust.cluster.neighbours import nearest_neighbours
from deepclust.data.views import CropSpec, ViewSpec
from deepclust.encoders.base import Encoder
from deepclust.engine.distributed import rank, rank_zero_first, world_size
from deepclust.errors import ConfigError, option
from deepclust.losses import float32_maths
from deepclust.losses.semantic import (
    confident_image_centres,
    nearest_rows,
    semantic_centres,
    semantic_pseudo_labels,
    semantic_space,
    sic_losses,
)
from deepclust.methods.base import METHODS, Method, StepInfo

if TYPE_CHECKING:
    from deepclust.engine.context import FitContext


@dataclass
class SICParams:
    # vocabulary and semantic space
    vocabulary: str = "wordnet"  # a local WordNet, a data.noun path, or a text file of nouns
    lemmas: Literal["first", "all"] = "first"  # WordNet: each synset's first word, or all
    template: str = "a photo of a {}"
    semantic_space: Literal["auto", "text", "image"] = "auto"  # auto: text if the encoder has one
    image_anchors: int = 1000  # image-only space: k-means centroids standing in for nouns
    anchor_iters: int = 30  # k-means iterations for those anchors (a cost cap)
    gamma_r: int = 500  # nouns kept nearest each image centre
    gamma_u: float = 0.05  # uniqueness: drop nouns with cos(noun, mean noun) >= 1 - gamma_u
    kmeans_n_init: int = 20
    kmeans_iters: int = 300
    text_batch_size: int = 256
    # centres and pseudo-labels
    xi_c: float = 0.9  # fraction of N / K most confident samples per image centre
    xi_a: int = 30  # nouns per semantic centre
    # which samples make an image centre: highest probability (the paper) or highest head
    # logit (the authors' ComputeCenter); and whose mean: unit or raw features (the code)
    centre_ranking: Literal["probabilities", "logits"] = "probabilities"
    centre_features: Literal["unit", "raw"] = "unit"
    # the mean of nouns (semantic centres, uniqueness filter): of unit or raw text embeddings
    text_mean: Literal["unit", "raw"] = "unit"  # raw = the authors' code
    # objective
    neighbours: int = 20  # 50 for Tiny-ImageNet
    neighbours_include_self: bool = False  # True = the authors' lists (i among its k + 1)
    head_features: Literal["normalised", "raw"] = "normalised"  # raw = the authors' head input
    entropy_weight: float = 5.0  # lambda
    pseudo_weight: float = 0.1  # beta
    init_head: Literal["random", "kmeans"] = "random"  # kmeans: head rows = the image centres
    # naming
    name_nouns: int = 5


def neighbour_draw(num: int, k: int, seed: int, step: int) -> torch.Tensor:
    """This process's rows of a draw for the global batch: [num] ints in [0, k)."""
    w = world_size()
    gen = torch.Generator().manual_seed(stream_seed(seed, "sic-neighbours", step))
    return torch.randint(k, (num * w,), generator=gen)[rank() * num : (rank() + 1) * num]


@METHODS.register("sic")
class SIC(Method):
    """SIC (Cai et al. 2023): linear head on frozen CLIP features, WordNet semantic pseudo-labels"""

    name = "sic"
    Params = SICParams

    def __init__(
        self, params: SICParams, encoder: Encoder, num_clusters: int, num_samples: int
    ) -> None:
        super().__init__(params, encoder, num_clusters, num_samples)
        check_params(params)
        if encoder.trainable:
            raise ConfigError(
                "sic trains a head on the features of a frozen pretrained encoder: use "
                f"{option('encoder.name', 'open_clip:ViT-B-32')} (the paper's CLIP), "
                "hf:<CLIP name or folder>, or an image-only one such as efficientnet_lite0."
            )
        dim = encoder.feature_dim
        self.head = nn.Linear(dim, num_clusters)
        self.register_buffer("image_centres", torch.zeros(num_clusters, dim))
        self.register_buffer("semantic_centres", torch.zeros(num_clusters, dim))
        self.register_buffer("head_initialised", torch.zeros((), dtype=torch.bool))
        # Rebuilt by on_train_start (also on resume), never checkpointed.
        self.register_buffer("fit_features", torch.zeros(0, dim), persistent=False)
        self.register_buffer("head_inputs", torch.zeros(0, dim), persistent=False)
        self.register_buffer("knn", torch.zeros(0, 1, dtype=torch.long), persistent=False)
        self.register_buffer("space", torch.zeros(0, dim), persistent=False)
        # the rows semantic centres average: the space's unit rows, or raw ones (text_mean)
        self.register_buffer("space_values", torch.zeros(0, dim), persistent=False)
        self.space_words: list[str] | None = None
        self._seed = 0

    # ------------------------------------------------------------------ set-up
    def view_spec(self) -> ViewSpec:
        """One view: the clean image at the encoder's resolution (features are cached)."""
        crop = CropSpec(
            count=1,
            size=self.encoder.input_size or 224,
            scale=(1.0, 1.0),
            ratio=(1.0, 1.0),
            flip_p=0.0,
            jitter_p=0.0,
            grayscale_p=0.0,
        )
        return ViewSpec((crop,), mean=self.encoder.mean, std=self.encoder.std)

    @torch.no_grad()
    def on_train_start(self, ctx: FitContext) -> None:
        p = self.params
        if ctx.fit_features is None:
            raise ConfigError("sic needs the cached features of a frozen encoder.")
        self._seed = ctx.seed
        f = F.normalize(ctx.fit_features.float(), dim=1)
        k_nn = min(p.neighbours, len(f) - 1)
        if k_nn < 1:
            raise ConfigError("sic needs at least 2 training images (one neighbour each).")
        self.fit_features = f
        self.head_inputs = ctx.fit_features.float() if p.head_features == "raw" else f
        knn = nearest_neighbours(f, k_nn + 1)  # self comes first
        self.knn = knn if p.neighbours_include_self else knn[:, 1:]
        clustering = spherical_kmeans(
            f,
            self.num_clusters,
            max_iter=p.kmeans_iters,
            seed=stream_seed(ctx.seed, "sic-image-centres"),
            n_init=p.kmeans_n_init,
        )
        values, words = self.vocabulary_embeddings(ctx, f)  # raw rows under text_mean: raw
        vocab = F.normalize(values, dim=1) if p.text_mean == "raw" else values
        keep = semantic_space(clustering.centroids, vocab, p.gamma_r, p.gamma_u, values)
        if len(keep) == 0:
            raise ConfigError(
                "the semantic space is empty: every noun near the image centres failed the "
                "uniqueness filter; raise params.gamma_r or lower params.gamma_u."
            )
        self.space, self.space_values = vocab[keep], values[keep]
        self.space_words = [words[i] for i in keep.tolist()] if words is not None else None
        if p.init_head == "kmeans" and not bool(self.head_initialised):
            self.head.weight.copy_(clustering.centroids)
            self.head.bias.zero_()
        self.head_initialised.fill_(True)

    def vocabulary_embeddings(
        self, ctx: FitContext, features: torch.Tensor
    ) -> tuple[torch.Tensor, list[str] | None]:
        """The candidates for the semantic space [T, D] (unit rows; raw text embeddings under
        text_mean: raw) and their words (None: image-only)."""
        from deepclust.data.vocabulary import load_vocabulary
        from deepclust.encoders.vision_language import text_embeddings, text_encoder

        p = self.params
        text = text_encoder(self.encoder) if p.semantic_space != "image" else None
        if text is None and p.semantic_space == "text":
            raise ConfigError(
                f"params.semantic_space is 'text' but encoder '{self.encoder.identity}' has no "
                "text tower: use open_clip:<model> or hf:<CLIP>, or semantic_space: image."
            )
        if text is None:
            anchors = spherical_kmeans(
                features,
                min(p.image_anchors, len(features)),
                max_iter=p.anchor_iters,
                seed=stream_seed(ctx.seed, "sic-image-anchors"),
            )
            return anchors.centroids, None
        nouns = load_vocabulary(p.vocabulary, p.lemmas)
        with rank_zero_first():  # one process embeds ~68k nouns into the cache, the rest read it
            emb = text_embeddings(
                text, nouns, p.template, ctx.device, p.text_batch_size, ctx.progress,
                unit=p.text_mean == "unit",
            )  # fmt: skip
        if emb.shape[1] != features.shape[1]:
            raise ConfigError(
                f"text embeddings are {emb.shape[1]}-d but image features {features.shape[1]}-d: "
                "the text tower does not belong to this image tower."
            )
        return emb.to(features.device), nouns

    @torch.no_grad()
    def refresh_centres(self) -> None:
        """Image centres v, semantic centres h from the current head over the whole fit set."""
        p = self.params
        logits = self.head(self.head_inputs).float()
        scores = logits if p.centre_ranking == "logits" else torch.softmax(logits, dim=1)
        features = self.head_inputs if p.centre_features == "raw" else self.fit_features
        v = confident_image_centres(features, scores, p.xi_c)
        self.image_centres.copy_(v)
        self.semantic_centres.copy_(semantic_centres(v, self.space, p.xi_a, self.space_values))

    def on_epoch_start(self, ctx: FitContext) -> None:
        self.refresh_centres()

    def on_train_end(self, ctx: FitContext) -> None:
        self.refresh_centres()  # the final head's centres name the clusters

    # ------------------------------------------------------------------ training
    def head_input(self, features: torch.Tensor) -> torch.Tensor:
        """What the head sees of features [B, D] (float32): unit rows, or raw (head_features)."""
        return features if self.params.head_features == "raw" else F.normalize(features, dim=1)

    def neighbour_inputs(self, f: torch.Tensor, x: torch.Tensor, info: StepInfo) -> torch.Tensor:
        """Head inputs [B, D] of one neighbour n(i) per sample; f [B, D] unit features, x their
        head inputs."""
        k = self.knn.shape[1]
        if info.indices is not None and len(self.knn):
            pick = neighbour_draw(len(f), k, self._seed, info.step).to(f.device)
            idx = info.indices.to(self.knn.device)
            return self.head_inputs[self.knn[idx, pick.to(idx.device)]].to(x.dtype)
        # No fit-set indices (held-out images): neighbours within the batch.
        own = int(self.params.neighbours_include_self)
        k = min(self.params.neighbours, len(f) - 1) + own
        if k < 1:
            return x
        sims = f @ f.T
        if not own:
            sims.fill_diagonal_(float("-inf"))
        near = sims.topk(k, dim=1).indices
        pick = neighbour_draw(len(f), k, self._seed, info.step).to(f.device)
        return x[near[torch.arange(len(f), device=f.device), pick]]

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> dict[str, torch.Tensor]:
        p = self.params
        with float32_maths(views[0].device.type):  # head and losses: SIC's whole step
            raw = self.features(views[0]).float()
            f, x = F.normalize(raw, dim=1), self.head_input(raw)
            with torch.no_grad():
                neighbours = self.neighbour_inputs(f, x, info)
                pseudo = semantic_pseudo_labels(f, self.semantic_centres)
            return sic_losses(
                self.head(x), self.head(neighbours), pseudo, p.entropy_weight, p.pseudo_weight
            )

    # ------------------------------------------------------------------ inference
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        with float32_maths(images.device.type):
            x = self.head_input(self.features(images).float())
            return torch.softmax(self.head(x), dim=1)

    def cluster_names(self) -> list[list[str]] | None:
        """Per cluster the name_nouns nouns of the semantic space nearest its image centre."""
        if self.space_words is None or not len(self.space):
            return None
        near = nearest_rows(self.image_centres, self.space, self.params.name_nouns)
        return [[self.space_words[j] for j in row] for row in near.tolist()]


def check_params(p: SICParams) -> None:
    """Raise ConfigError for settings the method cannot run with."""
    problems = []
    if p.gamma_r < 1 or p.xi_a < 1 or p.neighbours < 1 or p.name_nouns < 1:
        problems.append("params.gamma_r, xi_a, neighbours and name_nouns must be at least 1")
    if not 0.0 < p.xi_c <= 1.0:
        problems.append("params.xi_c must be in (0, 1]")
    if not 0.0 <= p.gamma_u < 2.0:
        problems.append("params.gamma_u must be in [0, 2)")
    if p.image_anchors < 1 or p.kmeans_n_init < 1 or p.anchor_iters < 1 or p.kmeans_iters < 1:
        problems.append(
            "params.image_anchors, kmeans_n_init, anchor_iters, kmeans_iters must be positive"
        )
    if p.centre_features == "raw" and p.head_features != "raw":
        problems.append("params.centre_features: raw needs params.head_features: raw")
    if "{}" not in p.template:
        problems.append("params.template must contain '{}' where the noun goes")
    if problems:
        raise ConfigError("; ".join(problems) + ".")
