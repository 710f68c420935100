"""SIC: deepclust's training step and per-epoch state against the authors' code, in float64.

    python benchmarks/equivalence/sic.py --official /path/to/SIC

Authors' side: Bruce-XJChen/SIC imported from --official at run time: their ClusteringModel
(one linear head), construct_semantic_space (image-centre and uniqueness filters),
ComputeCenter (per-epoch image and semantic centres), SICLoss, and one epoch of their own
sic_train() with update_cluster_head_only (the released setting).
deepclust's side: configs/sic/cifar10.yaml's params and optimiser (Adam 1e-4, weight
decay 1e-4; head_features raw, neighbours_include_self), stepped by optimisation_step.

No CLIP weights can be had offline, so both sides get the same frozen "CLIP": raw image
features (norms about 10, as ViT-B/32's) and a raw text table (one row per noun) that
their backbone.encode_text and deepclust's text tower both return. The semantic space's
k-means image centres are deepclust's (spherical k-means; the authors' Euclidean k-means
is a documented difference) and are given to both. Identical: head weights, batches,
the neighbour n(i) of every sample (deepclust's draw given to their loader), hyper-
parameters (gamma_r 500, gamma_u 0.05, xi_c 0.9, xi_a 30, 20 neighbours + self).

Compared: the semantic space (which nouns), the per-epoch image centres, semantic centres
and pseudo-labels of the whole fit set; per step the three loss terms and the head's
gradient; after the steps the head. The steps are compared twice: with each side's own
semantic centres (the whole pipeline), and with the authors' centres given to deepclust
(the step's mathematics alone).
"""

from __future__ import annotations

import collections
import collections.abc
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

N_IMAGES, DIM, K, N_NOUNS, BATCH = 400, 512, 10, 2000, 128  # DIM: their head is 512-d
HYPER = dict(gamma_r=500, gamma_u=0.05, xi_c=0.9, xi_a=30, topk=20, entropy_weight=5.0)


def synthetic_clip(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw image features [N, D], labels [N], raw text table [T, D]: K class directions plus a
    shared component (as CLIP's), norms varying around 10."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.nn.functional.normalize(torch.randn(K, DIM, generator=g), dim=1)
    shared = torch.nn.functional.normalize(torch.randn(DIM, generator=g), dim=0)
    labels = torch.arange(N_IMAGES) % K
    img = classes[labels] + 0.6 * torch.randn(N_IMAGES, DIM, generator=g) / DIM**0.5 + shared
    img = img / img.norm(dim=1, keepdim=True) * (10 + torch.rand(N_IMAGES, 1, generator=g) * 2)
    near = torch.randint(K, (N_NOUNS,), generator=g)
    weight = torch.rand(N_NOUNS, 1, generator=g)
    txt = weight * classes[near] + torch.randn(N_NOUNS, DIM, generator=g) / DIM**0.5 + shared
    txt = txt * (6 + 4 * torch.rand(N_NOUNS, 1, generator=g))
    return img, labels, txt


def import_authors(folder: Path, patches: common.Patches, nouns: list[str], table: torch.Tensor):
    index = {n: i for i, n in enumerate(nouns)}

    def tokenize(text: str | list[str]) -> torch.Tensor:
        texts = [text] if isinstance(text, str) else text
        return torch.tensor([[index[t.rsplit(" ", 1)[1]]] for t in texts])

    clip = patches.stub_module(
        "clip", "no CLIP weights offline: tokenize gives the noun's row of a shared text table",
        tokenize=tokenize,
    )  # fmt: skip
    tok = patches.stub_module(
        "clip.simple_tokenizer", "imported by models.py, unused", SimpleTokenizer=object
    )
    clip.simple_tokenizer = tok  # type: ignore[attr-defined]
    patches.stub_module("termcolor", "not installed; colored() returns the text", colored=str)
    patches.stub_module("pandas", "utils.py reads noun.csv with it; the nouns are given instead")
    patches.stub_module(
        "torch._six", "removed from torch; string_classes = str", string_classes=str
    )
    for name in ("Mapping", "Sequence"):
        patches.setattr(
            collections, name, getattr(collections.abc, name), "collections.abc's (old API)"
        )
    with common.official_on_path(folder, []):
        from losses.losses import SICLoss  # type: ignore[import-not-found]
        from models.models import ClusteringModel  # type: ignore[import-not-found]
        from utils import common_config  # type: ignore[import-not-found]
        from utils.compute_center import ComputeCenter  # type: ignore[import-not-found]
        from utils.train_utils import sic_train  # type: ignore[import-not-found]
    patches.setattr(
        common_config, "get_wordnet_noun", lambda filename: list(nouns),
        "returns the synthetic nouns instead of reading data/noun.csv",
    )  # fmt: skip
    return SimpleNamespace(
        SICLoss=SICLoss, ClusteringModel=ClusteringModel, common_config=common_config,
        ComputeCenter=ComputeCenter, sic_train=sic_train,
    )  # fmt: skip


class FakeBackbone(torch.nn.Module):
    """Their model.backbone: encode_text(tokens) -> the text table's rows (raw)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.clone())

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens[:, 0]]

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x


def build_ours(nouns: list[str], table: torch.Tensor, vocab_file: Path) -> Any:
    from deepclust.config import build_config, params_from_dict
    from deepclust.encoders.base import Encoder
    from deepclust.encoders.vision_language import TextEncoder
    from deepclust.methods.sic import SIC
    from deepclust.training.build import build_optimizer

    index = {n: i for i, n in enumerate(nouns)}

    class Text(TextEncoder):
        identity = "equivalence-text@random"  # '@random': never cached

        def encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
            return table[[index[t.rsplit(" ", 1)[1]] for t in texts]]

    cfg = build_config("sic", "cifar10")
    params = dict(cfg.params, vocabulary=str(vocab_file))
    encoder = Encoder(torch.nn.Identity(), DIM, trainable=False, identity="equivalence@random")
    encoder.text_encoder = Text()  # type: ignore[assignment]
    torch.manual_seed(0)
    method = SIC(params_from_dict(SIC.Params, params), encoder, K, N_IMAGES).double()
    return cfg, method, build_optimizer(method.parameter_groups(), cfg)


def their_epoch_centres(au: Any, theirs: Any, img: torch.Tensor, text_loader: Any, args: Any):
    """Their ComputeCenter at an epoch's start (what sic_train computes first)."""
    cpt = au.ComputeCenter(num_cluster=K)
    v = cpt.get_centers(img, theirs, args)
    return v, cpt.search_sim_texts(args, v, text_loader, theirs)


def run(
    au: Any, world: dict[str, Any], patches: common.Patches, steps: int, inject: bool
) -> dict[str, Any]:
    """One epoch of `steps` steps on both sides (inject: their semantic centres given to ours)."""
    import deepclust.methods.sic as dc_sic
    from deepclust.cluster import spherical_kmeans, stream_seed
    from deepclust.methods.base import StepInfo
    from deepclust.training.steps import optimisation_step

    img, table, nouns = world["img"], world["table"], world["nouns"]
    _, ours, opt_ours = build_ours(nouns, table, world["vocab_file"])
    ctx = SimpleNamespace(fit_features=img, seed=0, device=torch.device("cpu"), progress=False)
    ours.on_train_start(ctx)
    theirs = au.ClusteringModel(FakeBackbone(table), K)
    with torch.no_grad():
        theirs.cluster_head_i[0].weight.copy_(ours.head.weight)
        theirs.cluster_head_i[0].bias.copy_(ours.head.bias)
    # their semantic space, from deepclust's k-means image centres (given to both)
    centres = spherical_kmeans(
        torch.nn.functional.normalize(img, dim=1), K, max_iter=300,
        seed=stream_seed(0, "sic-image-centres"), n_init=20,
    ).centroids  # fmt: skip
    args = SimpleNamespace(**HYPER, ce_weight=0.1, lr=1e-4)
    p = {
        "batch_size": BATCH, "num_workers": 0, "num_classes": K, "epochs": 100,
        "optimizer_image": {"optimizer_kwargs": {"lr": 1e-4, "weight_decay": 1e-4},
                            "scheduler": "constant"},
    }  # fmt: skip
    text_loader = au.common_config.construct_semantic_space(p, centres, theirs, args)
    opt_theirs = torch.optim.Adam(theirs.parameters(), **p["optimizer_image"]["optimizer_kwargs"])

    # the epoch's state on both sides, from the same head
    v, h = their_epoch_centres(au, theirs, img, text_loader, args)
    ours.on_epoch_start(ctx)
    space_ids = {nouns.index(w) for w in ours.space_words}
    their_ids = {int(i) for i in text_loader.dataset.tensors[2]}
    ours_pseudo = (torch.nn.functional.normalize(img, dim=1) @ ours.semantic_centres.T).argmax(1)
    theirs_pseudo = (img @ h.T).softmax(-1).argmax(1)
    state = {
        "semantic space: nouns in one space only": float(len(space_ids ^ their_ids)),
        "image centres (rel)": common.rel(ours.image_centres, v),
        "semantic centres (rel)": common.rel(ours.semantic_centres, h),
        "pseudo-labels differing (share of the fit set)": float(
            (ours_pseudo != theirs_pseudo).double().mean()
        ),
    }
    sizes = {
        "deepclust": len(space_ids),
        "authors": len(their_ids),
        "common": len(space_ids & their_ids),
    }
    if inject:
        ours.semantic_centres.copy_(h)

    # deepclust's steps, the neighbour draws recorded
    start = torch.cat([ours.head.weight.flatten(), ours.head.bias]).detach().clone()
    named_ours = dict(ours.head.named_parameters())
    named_theirs = dict(theirs.cluster_head_i[0].named_parameters())
    grads_ours = common.spy_on_step(opt_ours, named_ours)
    grads_theirs = common.spy_on_step(opt_theirs, named_theirs)
    picks: list[torch.Tensor] = []
    draw = dc_sic.neighbour_draw
    dc_sic.neighbour_draw = lambda *a, **k: picks.append(draw(*a, **k)) or picks[-1]
    gen = torch.Generator().manual_seed(7)
    loader, our_losses = [], []
    for s in range(steps):
        idx = torch.randperm(len(img), generator=gen)[:BATCH]
        info = StepInfo(0, s, s, steps, steps, indices=idx)
        _, losses = optimisation_step(ours, ours, opt_ours, [img[idx]], info)
        our_losses.append({k: v.item() for k, v in losses.items()})
        loader.append({"index": idx, "n_index": ours.knn[idx, picks[-1]]})
    dc_sic.neighbour_draw = draw

    # their epoch: sic_train itself (centres, then the steps), losses recorded
    recorded: list[dict[str, float]] = []
    criterion = au.SICLoss(args, K)
    forward = criterion.forward

    def recording_forward(*a: Any, **k: Any) -> Any:
        total, cons, ent, ce = forward(*a, **k)
        recorded.append({"consistency": cons.item(), "balance": ent.item(), "pseudo": ce.item()})
        return total, cons, ent, ce

    criterion.forward = recording_forward
    cpt = au.ComputeCenter(num_cluster=K)
    au.sic_train(p, args, loader, text_loader, [centres, img], theirs, opt_theirs, criterion,
                 cpt, 1, True)  # fmt: skip
    per_step = [
        common.step_record(
            {k: (mine[k], theirs_[k]) for k in mine},
            grads_ours[i],
            {n: grads_theirs[i][n] for n in named_theirs},
        )
        for i, (mine, theirs_) in enumerate(zip(our_losses, recorded, strict=True))
    ]
    for rec in per_step:  # group names: deepclust's
        rec["grad_rel_l2"] = {"head": rec["grad_rel_l2_max"]}
    params_rel = {
        "head": common.rel(
            torch.cat([ours.head.weight.flatten(), ours.head.bias]),
            torch.cat([theirs.cluster_head_i[0].weight.flatten(), theirs.cluster_head_i[0].bias]),
        )
    }
    moved = {"head": common.rel(torch.cat([ours.head.weight.flatten(), ours.head.bias]), start)}
    return dict(state=state, sizes=sizes, steps=per_step, params_rel=params_rel, moved=moved)


def main() -> None:
    args = common.parse_args("sic", __doc__)
    started = time.time()
    patches = common.Patches()
    common.float64_everywhere(patches)
    common.cpu_only(patches)
    img, _, table = synthetic_clip()
    nouns = [f"noun{i:05d}" for i in range(N_NOUNS)]
    vocab_file = Path(tempfile.mkdtemp()) / "nouns.txt"
    vocab_file.write_text("\n".join(nouns) + "\n")
    world = dict(img=img, table=table, nouns=nouns, vocab_file=vocab_file)
    au = import_authors(args.official, patches, nouns, table)
    whole = run(au, world, patches, args.steps, inject=False)
    maths = run(au, world, patches, args.steps, inject=True)
    setup = {
        "config": "configs/sic/cifar10.yaml (params, optimiser)",
        "features": f"{N_IMAGES} synthetic raw 'CLIP' image features, {DIM}-d, norms 10-12",
        "vocabulary": f"{N_NOUNS} synthetic nouns, raw text rows of norm 6-10",
        "clusters": K,
        "batch": BATCH,
        "semantic_space_sizes": whole["sizes"],
        "steps compared": "with the authors' semantic centres given to deepclust "
        "(per_step); the whole pipeline with each side's own centres: whole_pipeline",
    }
    notes = [
        "per_step: the authors' semantic centres given to deepclust (the step's mathematics "
        "alone); whole_pipeline: each side's own semantic space, per-epoch centres and "
        "pseudo-labels (paper config: centre_ranking logits, centre_features raw, text_mean raw)",
        "balance term: the authors clamp probabilities at 1e-8, deepclust adds 1e-12 in the "
        "log: about 1e-12 relative",
        "their uniqueness filter averages per-batch means of the text embeddings (128 a "
        "batch; not the exact mean when the last batch is short); it chose the same nouns here",
    ]
    args_out = common.summarise(
        "sic", args, patches, setup, maths["steps"], maths["params_rel"], {}, whole["state"],
        notes, started, maths["moved"],
    )  # fmt: skip
    args_out["whole_pipeline"] = {
        "per_step": whole["steps"],
        "params_rel_after": whole["params_rel"],
    }
    args.out.write_text(__import__("json").dumps(args_out, indent=2) + "\n")
    for name, value in whole["state"].items():
        print(f"  per-epoch state: {name}: {value}")
    for i, s in enumerate(whole["steps"]):
        terms = ", ".join(f"{k} {v['rel']:.1e}" for k, v in s["losses"].items())
        print(f"  whole pipeline step {i}: {terms}; grad {s['grad_rel_l2_max']:.1e}")


if __name__ == "__main__":
    main()
