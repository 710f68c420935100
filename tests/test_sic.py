"""SIC: semantic space, centres, pseudo-labels and objective against direct computations;
the method on a synthetic vision-language world; vocabularies; the tiny-CLIP back-ends."""

from __future__ import annotations

import csv
import json
import math
import string
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deepclust import api
from deepclust.config import CONFIG_ROOT, build_config, params_from_dict
from deepclust.data import vocabulary as vocab
from deepclust.errors import ConfigError
from deepclust.losses import semantic as sem
from deepclust.methods import METHODS
from deepclust.methods.sic import SICParams, check_params, neighbour_draw
from dist_harness import run_in_processes
from sic_dist import sic_weight_gradient
from sic_world import TEMPLATE, make_world, register_world, write_images

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


# --------------------------------------------------------------------------- pure functions


def test_filters_and_semantic_space_against_direct_computation():
    angles = range(0, 360, 36)  # a symmetric ring: the mean points along z
    ring = [[math.cos(math.radians(a)), math.sin(math.radians(a)), 0.3] for a in angles]
    nouns = unit(*ring, [0.05, 0.1, 1.0], [0.1, 0.05, 1.0])  # the last two: near the mean
    centres = unit([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    gamma_r, gamma_u = 3, 0.02
    rows = nouns.tolist()
    expected_r = set()
    for c in centres.tolist():
        order = sorted(range(len(rows)), key=lambda j: -cos(c, rows[j]))
        expected_r |= set(order[:gamma_r])
    got_r = sem.image_centre_filter(centres, nouns, gamma_r)
    assert set(got_r.nonzero().flatten().tolist()) == expected_r

    mean = [sum(r[d] for r in rows) / len(rows) for d in range(3)]
    expected_u = {j for j, r in enumerate(rows) if cos(r, mean) < 1 - gamma_u}
    got_u = sem.uniqueness_filter(nouns, gamma_u)
    assert set(got_u.nonzero().flatten().tolist()) == expected_u
    assert 0 < len(expected_u) < len(rows)  # the example exercises the filter

    space = sem.semantic_space(centres, nouns, gamma_r, gamma_u)
    assert space.tolist() == sorted(expected_r & expected_u)


def test_centres_and_pseudo_labels_against_direct_computation():
    g = torch.Generator().manual_seed(1)
    feats = F.normalize(torch.randn(12, 4, generator=g), dim=1)
    probs = torch.softmax(torch.randn(12, 3, generator=g) * 2, dim=1)
    xi_c = 0.8
    m = int(xi_c * 12 / 3)  # 3 samples per centre
    centres = sem.confident_image_centres(feats, probs, xi_c)
    for c in range(3):
        top = sorted(range(12), key=lambda i: -float(probs[i, c]))[:m]
        direct = F.normalize(feats[top].mean(0), dim=0)
        assert torch.allclose(centres[c], direct, atol=1e-6)

    space = F.normalize(torch.randn(9, 4, generator=g), dim=1)
    h = sem.semantic_centres(centres, space, xi_a=2)
    for c in range(3):
        near = sorted(range(9), key=lambda j: -float(centres[c] @ space[j]))[:2]
        assert torch.allclose(h[c], F.normalize(space[near].mean(0), dim=0), atol=1e-6)

    labels = sem.semantic_pseudo_labels(feats, h)
    direct = [max(range(3), key=lambda c: float(feats[i] @ h[c])) for i in range(12)]
    assert labels.tolist() == direct
    assert torch.allclose(h.norm(dim=1), torch.ones(3))  # unit centres


def _direct_objective(z, z_nb, y, lam, beta):
    b, k = len(z), len(z[0])

    def softmax(row):
        top = max(row)
        e = [math.exp(v - top) for v in row]
        return [v / sum(e) for v in e]

    p, q = [softmax(r) for r in z], [softmax(r) for r in z_nb]
    consistency = -sum(math.log(sum(p[i][c] * q[i][c] for c in range(k))) for i in range(b)) / b
    mean = [sum(p[i][c] for i in range(b)) / b for c in range(k)]
    balance = -lam * -sum(m * math.log(m) for m in mean)
    pseudo = beta * sum(-math.log(p[i][y[i]]) for i in range(b)) / b
    return consistency, balance, pseudo


def test_objective_against_direct_computation_and_invariances():
    g = torch.Generator().manual_seed(2)
    z, z_nb = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 3, 3, 2, 0])
    out = sem.sic_losses(z, z_nb, y, entropy_weight=5.0, pseudo_weight=0.1)
    direct = _direct_objective(z.tolist(), z_nb.tolist(), y.tolist(), 5.0, 0.1)
    for name, value in zip(("consistency", "balance", "pseudo"), direct, strict=True):
        assert out[name].item() == pytest.approx(value, rel=1e-5), name
    # shifting logits by a constant changes no probability; swapping sample and neighbour
    # leaves the consistency term unchanged
    shifted = sem.sic_losses(z + 3.0, z_nb - 1.0, y)
    assert all(torch.allclose(shifted[n], out[n], atol=1e-5) for n in out)
    assert torch.allclose(
        sem.neighbour_consistency(z.softmax(1), z_nb.softmax(1)),
        sem.neighbour_consistency(z_nb.softmax(1), z.softmax(1)),
    )
    # the balance entropy is log K exactly when the mean prediction is uniform
    assert sem.balance_entropy(torch.eye(4)).item() == pytest.approx(math.log(4), rel=1e-6)
    assert sem.balance_entropy(torch.eye(4)[[0, 0, 1, 1]]).item() < math.log(4) - 0.5


def test_objective_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    z_nb = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([2, 0, 1, 1, 0])

    def total(a, b):
        return sum(sem.sic_losses(a, b, y).values())

    a, b = z.clone().requires_grad_(True), z_nb.clone().requires_grad_(True)
    total(a, b).backward()
    h = 1e-2  # the entropy is computed in float32 (losses/common.py): a wide step
    for tensor, grad, other_first in ((z, a.grad, True), (z_nb, b.grad, False)):
        numeric = torch.zeros_like(tensor)
        for idx in range(tensor.numel()):
            plus, minus = tensor.clone().flatten(), tensor.clone().flatten()
            plus[idx] += h
            minus[idx] -= h
            plus, minus = plus.view_as(tensor), minus.view_as(tensor)
            if other_first:
                diff = total(plus, z_nb) - total(minus, z_nb)
            else:
                diff = total(z, plus) - total(z, minus)
            numeric.view(-1)[idx] = diff / (2 * h)
        assert torch.allclose(grad, numeric, atol=5e-4), (grad, numeric)


def test_neighbour_draw_of_two_processes_equals_one(monkeypatch):
    import deepclust.methods.sic as sic_module

    whole = neighbour_draw(8, 20, seed=5, step=7)
    parts = []
    for r in range(2):
        monkeypatch.setattr(sic_module, "world_size", lambda: 2)
        monkeypatch.setattr(sic_module, "rank", lambda r=r: r)
        parts.append(neighbour_draw(4, 20, seed=5, step=7))
    assert torch.equal(torch.cat(parts), whole)
    assert not torch.equal(whole, neighbour_draw(8, 20, seed=5, step=8))


def test_objective_over_two_processes_gives_the_one_process_gradient():
    g = torch.Generator().manual_seed(4)
    z, nb = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    y = torch.randint(4, (8,), generator=g)
    one = sic_weight_gradient(0, z, nb, y, 1)
    parts = run_in_processes(sic_weight_gradient, 2, z, nb, y, 2)
    assert torch.allclose((parts[0] + parts[1]) / 2, one, atol=1e-6)  # DDP's average


# --------------------------------------------------------------------------- vocabulary

DATA_NOUN = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  \n"
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived  \n"
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 02083346 n 0000 | a member  \n"
    "02121620 05 n 02 cat 0 true_cat 0 001 @ 02120997 n 0000 | feline mammal  \n"
    "10114209 18 n 02 dog 1 frump 0 000 | a dull unattractive unpleasant girl or woman  \n"
    "09999999 18 n 0c a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 k 0 l 0 000 | twelve words  \n"
)


def test_wordnet_data_noun_parsing(tmp_path):
    path = tmp_path / "data.noun"
    path.write_text(DATA_NOUN)
    first = vocab.parse_data_noun(path, "first")
    assert first == ["entity", "dog", "cat", "a"]  # one per synset, 'dog' kept once
    every = vocab.parse_data_noun(path, "all")
    assert every[:7] == [
        "entity",
        "dog",
        "domestic dog",
        "Canis familiaris",
        "cat",
        "true cat",
        "frump",
    ]
    assert len(every) == 7 + 12  # w_cnt is hexadecimal: 0c = 12 words
    assert vocab.load_vocabulary(str(tmp_path)) == first  # a folder holding data.noun
    text = tmp_path / "nouns.txt"
    text.write_text("# my nouns\nfire truck\n\nzebra\nfire truck\n")
    assert vocab.load_vocabulary(str(text)) == ["fire truck", "zebra"]
    (tmp_path / "bad" / "data.noun").parent.mkdir()
    (tmp_path / "bad" / "data.noun").write_text("00001740 03 n zz entity\n")
    with pytest.raises(ConfigError, match="line 1"):
        vocab.load_vocabulary(str(tmp_path / "bad" / "data.noun"))


@pytest.mark.skipif(
    not Path("/usr/share/wordnet/data.noun").is_file(), reason="wordnet-base not installed"
)
def test_installed_wordnet_gives_about_68k_nouns():
    nouns = vocab.parse_data_noun("/usr/share/wordnet/data.noun")
    assert len(nouns) == 67893 and len(set(nouns)) == len(nouns)  # WordNet 3.0, first lemmas
    assert {"dog", "fire engine", "airplane", "truck"} <= set(nouns)


def test_missing_wordnet_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(vocab, "WORDNET_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    with pytest.raises(ConfigError, match="apt-get install wordnet-base") as err:
        vocab.load_vocabulary("wordnet")
    assert "params.vocabulary=/path/to/nouns.txt" in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        vocab.load_vocabulary(str(tmp_path / "missing.txt"))
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path))
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    assert vocab.load_vocabulary("wordnet") == ["entity", "dog", "cat", "a"]


def test_text_embeddings_are_unit_batched_and_cached(tmp_path, monkeypatch):
    from deepclust.encoders.vision_language import FunctionText, text_embeddings

    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path))
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.tensor([[len(t), 1.0, t.count("a")] for t in texts])

    text = FunctionText(encode, "fake-text@v1")
    emb = text_embeddings(text, ["cat", "zebra", "ox"], "a photo of a {}", batch_size=2)
    assert [len(c) for c in calls] == [2, 1] and calls[0][0] == "a photo of a cat"
    assert torch.allclose(emb.norm(dim=1), torch.ones(3))
    assert torch.allclose(emb[0], F.normalize(torch.tensor([16.0, 1.0, 3.0]), dim=0))
    again = text_embeddings(text, ["cat", "zebra", "ox"], "a photo of a {}", batch_size=2)
    assert len(calls) == 2 and torch.equal(again, emb)  # from the cache
    text_embeddings(text, ["cat", "zebra", "ox"], "a {}", batch_size=2)  # another template
    assert len(calls) == 4
    with pytest.raises(ConfigError, match="must contain"):
        text_embeddings(text, ["cat"], "a photo")


# --------------------------------------------------------------------------- the method


def world_config(tmp_path, encoder: str, nouns: dict, **params):
    (tmp_path / "nouns.txt").write_text("\n".join(nouns))
    overrides = {
        "data.data_dir": str(tmp_path / "images"),
        "data.protocol": "all",
        "encoder.name": encoder,
        "encoder.input_size": None,
        "train.epochs": 15,
        "train.batch_size": 60,
        "train.optimizer.lr": 0.01,
        "train.eval_every": 0,
        "train.progress": False,
        "params.vocabulary": str(tmp_path / "nouns.txt"),
        "params.gamma_r": 20,
        "params.xi_a": 3,
        **{f"params.{k}": v for k, v in params.items()},
    }
    return api.make_config("sic", "imagefolder", overrides=overrides)


def test_sic_recovers_and_names_the_classes_of_a_synthetic_world(tmp_path, capsys):
    feats, labels, nouns, names = make_world()
    write_images(tmp_path / "images", labels, names)
    encoder = register_world("recover", feats, nouns)
    cfg = world_config(tmp_path, encoder, nouns, init_head="kmeans")
    result = api.train(cfg, out=tmp_path / "run")
    assert result.summary["metrics"]["acc"] >= 0.98
    written = json.loads((tmp_path / "run" / "cluster_names.json").read_text())
    with open(tmp_path / "run" / "predictions.csv", newline="") as fh:
        clusters = torch.tensor([int(r["cluster"]) for r in csv.DictReader(fh)])
    for c, words in enumerate(written):
        majority = int(labels[clusters == c].mode().values)
        assert sorted(words[:3]) == [f"{names[majority]} noun{j}" for j in range(3)]
        assert not any(w.startswith("generic") for w in words)  # the uniqueness filter
    evaluated = api.evaluate(tmp_path / "run")
    assert evaluated["cluster_names"][0] == ", ".join(written[0])
    rows = api.predict(tmp_path / "run", [tmp_path / "images" / names[1]], out=tmp_path / "p.csv")
    assert all(r["name"] == ", ".join(written[r["cluster"]]) for r in rows)
    assert "name" in (tmp_path / "p.csv").read_text().splitlines()[0]
    from deepclust import cli

    assert cli.main(["evaluate", str(tmp_path / "run")]) == 0
    assert f"cluster 0: {', '.join(written[0])}" in capsys.readouterr().out
    out_csv = str(tmp_path / "q.csv")
    assert (
        cli.main(["predict", str(tmp_path / "run"), str(tmp_path / "images"), "--out", out_csv])
        == 0
    )
    assert f": {', '.join(written[1])}" in capsys.readouterr().out


def test_resumed_sic_run_ends_where_an_uninterrupted_one_does(tmp_path):
    feats, labels, nouns, names = make_world(seed=3, per_class=20)
    write_images(tmp_path / "images", labels, names)
    encoder = register_world("resume", feats, nouns)
    cfg = world_config(tmp_path, encoder, nouns, init_head="kmeans")
    cfg.train.epochs = 4
    api.train(cfg, out=tmp_path / "whole")
    cfg.train.epochs = 2
    api.train(cfg, out=tmp_path / "cut")
    resumed = api.resume_config(tmp_path / "cut", overrides={"train.epochs": 4})
    api.train(resumed, out=tmp_path / "cut", resume=True)
    a, b = (
        torch.load(tmp_path / d / "last.pt", weights_only=True)["model"] for d in ("whole", "cut")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_image_only_semantic_space_runs_without_a_text_tower(tmp_path):
    feats, labels, nouns, names = make_world(seed=1)
    write_images(tmp_path / "images", labels, names)
    encoder = register_world("imageonly", feats, nouns, with_text=False)
    cfg = world_config(tmp_path, encoder, nouns, init_head="kmeans", image_anchors=100)
    result = api.train(cfg, out=tmp_path / "run")
    assert result.summary["metrics"]["acc"] >= 0.9
    assert not (tmp_path / "run" / "cluster_names.json").exists()  # anchors have no words
    with pytest.raises(ConfigError, match="no text tower"):
        api.train(
            world_config(tmp_path, encoder, nouns, semantic_space="text"), out=tmp_path / "r2"
        )


def test_label_free_selection_ranks_sic_seeds(tmp_path):
    feats, labels, nouns, names = make_world(seed=2, per_class=30)
    write_images(tmp_path / "images", labels, names)
    encoder = register_world("select", feats, nouns)
    cfg = world_config(tmp_path, encoder, nouns, init_head="kmeans")
    seeds = api.train_seeds(cfg, 2, out=tmp_path / "runs", criterion="loss")
    picked = seeds.summary["label_free_pick"]
    assert picked["criterion"] == "loss" and picked["seed"] in (0, 1)
    selection = json.loads((tmp_path / "runs" / "selection.json").read_text())
    assert all(math.isfinite(r["loss"]) for r in selection["runs"])


def test_sic_needs_a_frozen_encoder_and_valid_params():
    with pytest.raises(ConfigError, match="frozen pretrained encoder"):
        from deepclust.encoders import build_encoder

        METHODS.get("sic")(SICParams(), build_encoder("small_cnn", 32), 10, 100)
    with pytest.raises(ConfigError, match="xi_c"):
        check_params(SICParams(xi_c=1.5))
    with pytest.raises(ConfigError, match="template"):
        check_params(SICParams(template="a photo"))


@pytest.mark.parametrize("path", sorted((CONFIG_ROOT / "sic").glob("*.yaml")), ids=str)
def test_packaged_configs_resolve(path):
    cfg = build_config("sic", config_file=path)
    params = params_from_dict(SICParams, cfg.params)
    assert cfg.method == "sic" and cfg.encoder.feature_noise == 0.0
    if path.stem not in ("cpu", "frozen"):  # the image-only space on EfficientNet-Lite
        assert cfg.encoder.name == "open_clip:ViT-B-32" and cfg.encoder.weights is None
        assert (cfg.train.batch_size, cfg.train.optimizer.lr) == (128, 1e-4)
        assert (params.gamma_r, params.gamma_u, params.xi_c, params.xi_a) == (500, 0.05, 0.9, 30)
        assert (params.entropy_weight, params.pseudo_weight) == (5.0, 0.1)
        assert params.neighbours == (50 if path.stem == "tiny_imagenet" else 20)
        assert cfg.train.optimizer.weight_decay == (0.009 if path.stem == "imagenet_dogs" else 1e-4)


# --------------------------------------------------------------------------- tiny CLIPs


def tiny_open_clip(tmp_path) -> str:
    open_clip = pytest.importorskip("open_clip")
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 16,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 8,
        },
        # the real tokenizer's vocabulary (49,408 ids), tiny widths
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 16,
            "heads": 2,
            "layers": 1,
        },
    }
    (tmp_path / "tiny-sic-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(tmp_path / "tiny-sic-clip.json"))
    return "open_clip:tiny-sic-clip"


def test_open_clip_text_tower_shares_the_image_space(tmp_path):
    from deepclust.encoders.vision_language import load_vision_language

    vl = load_vision_language(tiny_open_clip(tmp_path), weights="random", image_size=16)
    text = vl.encode_text(["a photo of a dog", "a photo of a cat"])
    image = vl.encode_image(torch.randn(3, 3, 16, 16))
    assert text.shape == (2, 16) and image.shape == (3, 16)
    assert torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)
    model = vl.image.body.model
    import open_clip

    direct = model.encode_text(open_clip.get_tokenizer("tiny-sic-clip")(["a photo of a dog"]))
    assert torch.allclose(text[0], F.normalize(direct, dim=1)[0], atol=1e-5)


def test_hf_clip_text_tower_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from deepclust.encoders.vision_language import load_vision_language

    tokens = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase:
        tokens[ch] = len(tokens)
        tokens[ch + "</w>"] = len(tokens)
    (tmp_path / "vocab.json").write_text(json.dumps(tokens))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    folder = tmp_path / "clip"
    transformers.CLIPTokenizer(
        str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")
    ).save_pretrained(folder)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = transformers.CLIPConfig(
        text_config=dict(
            small, vocab_size=64, max_position_embeddings=32, projection_dim=16, eos_token_id=1
        ),
        vision_config=dict(small, image_size=16, patch_size=8, projection_dim=16),
        projection_dim=16,
    )
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(folder)
    vl = load_vision_language(f"hf:{folder}", image_size=16)
    text = vl.encode_text(["a photo of a dog"])
    assert text.shape == (1, 16) and vl.image.feature_dim == 16
    ids = transformers.AutoTokenizer.from_pretrained(folder)(
        ["a photo of a dog"], return_tensors="pt"
    )
    with torch.no_grad():
        direct = model.text_projection(model.text_model(**ids).pooler_output)
    assert torch.allclose(text, F.normalize(direct, dim=1), atol=1e-5)


@pytest.mark.slow
def test_tiny_open_clip_end_to_end(separable_images, tmp_path):
    encoder = tiny_open_clip(tmp_path)
    (tmp_path / "nouns.txt").write_text(
        "\n".join(["red", "green", "blue", "yellow", "stripe", "disk"])
    )
    cfg = api.make_config(
        "sic",
        "imagefolder",
        overrides={
            "data.data_dir": str(separable_images),
            "data.protocol": "all",
            "encoder.name": encoder,
            "encoder.weights": "random",
            "encoder.input_size": 16,
            "train.epochs": 2,
            "train.batch_size": 40,
            "train.progress": False,
            "params.vocabulary": str(tmp_path / "nouns.txt"),
            "params.gamma_r": 3,
            "params.xi_a": 2,
            "params.name_nouns": 2,
            "params.gamma_u": 0.0,  # a random text tower maps every prompt almost to one point
        },
    )
    result = api.train(cfg, out=tmp_path / "run")
    assert result.summary["metrics"]["n"] == 160
    names = json.loads((tmp_path / "run" / "cluster_names.json").read_text())
    assert len(names) == 4 and all(
        len(n) == 2 and set(n) <= {"red", "green", "blue", "yellow", "stripe", "disk"}
        for n in names
    )
    assert api.evaluate(tmp_path / "run")["cluster_names"] == [", ".join(n) for n in names]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert set(state) == {
        "head.weight",
        "head.bias",
        "image_centres",
        "semantic_centres",
        "head_initialised",
    }


def test_template_is_applied_to_every_noun():
    from deepclust.encoders.vision_language import prompts

    assert prompts(["dog", "fire truck"], TEMPLATE) == [
        "a photo of a dog",
        "a photo of a fire truck",
    ]
