"""The curated encoders (dinov2-s, clip-b32, ...): each built as a tiny randomly initialised
model of its own architecture through its real path (no network, no download), their
preprocessing and feature sizes against the libraries' registries, the weights read from
the hub cache, `list encoders`, and the fast one-line failure offline."""

from __future__ import annotations

import time
from pathlib import Path

import open_clip
import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants

from deepclust.cli import main
from deepclust.encoders import build_encoder, check_encoder_name, hub
from deepclust.encoders import cache as feature_cache
from deepclust.encoders.catalog import BY_NAME, CURATED
from deepclust.encoders.joined import JoinedEncoder
from deepclust.errors import ConfigError, DeepclustError

HUB_ENTRIES = [c for c in CURATED if c.hub is not None]
TINY_WIDTH = 32


def family_model(name: str) -> tuple[str, str]:
    return tuple(BY_NAME[name].spec.split(":", 1))  # type: ignore[return-value]


@pytest.fixture
def tiny_models(monkeypatch):
    """timm and open_clip build their real architectures, one block deep and 32 wide."""
    real_timm, real_clip = timm.create_model, open_clip.create_model

    def tiny_timm(name, pretrained=False, **kwargs):
        kwargs.update(depth=1, embed_dim=TINY_WIDTH, num_heads=2)
        return real_timm(name, pretrained=pretrained, **kwargs)

    def tiny_clip(name, pretrained=None, **kwargs):
        cfg = open_clip.get_model_config(name)
        vision = dict(cfg["vision_cfg"], layers=1, width=TINY_WIDTH, head_width=16)
        text = dict(cfg["text_cfg"], layers=1, width=TINY_WIDTH, heads=2)
        return real_clip(
            name, pretrained, vision_cfg=vision, text_cfg=text, embed_dim=TINY_WIDTH, **kwargs
        )

    monkeypatch.setattr(timm, "create_model", tiny_timm)
    monkeypatch.setattr(open_clip, "create_model", tiny_clip)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache of this test's own."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def put_in_cache(cache: Path, repo: str, filename: str, tensors: dict[str, torch.Tensor]) -> Path:
    """Lay a file out as huggingface_hub's cache does (refs/main -> snapshots/<commit>/file)."""
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    path = folder / "snapshots" / ("0" * 40) / filename
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def expected_preprocessing(name: str) -> tuple[tuple, tuple]:
    """(mean, std) the real model was trained with, from its library's own config."""
    family, model = family_model(name)
    if family == "timm":
        cfg = timm.models.get_pretrained_cfg(model)
        return tuple(cfg.mean), tuple(cfg.std)
    cfg = open_clip.get_pretrained_cfg(model, BY_NAME[name].weights)
    return tuple(cfg["mean"]), tuple(cfg["std"])


@pytest.mark.parametrize("entry", HUB_ENTRIES, ids=lambda c: c.name)
def test_catalog_agrees_with_the_library_registries(entry):
    family, model = family_model(entry.name)
    if family == "timm":
        cfg = timm.models.get_pretrained_cfg(model)
        assert model in timm.list_models(pretrained=True)
        assert cfg.hf_hub_id == entry.hub.repo and not cfg.hf_hub_filename
        with torch.device("meta"):  # the full-size architecture, no memory, no weights
            full = timm.create_model(model, num_classes=0, img_size=entry.input_size)
        assert full.num_features == entry.feature_dim
    else:
        assert (model, entry.weights) in open_clip.list_pretrained()
        tag = open_clip.get_pretrained_cfg(model, entry.weights)
        config = open_clip.get_model_config(model)
        assert tag["hf_hub"].strip("/") == entry.hub.repo
        assert config["embed_dim"] == entry.feature_dim
        assert config["vision_cfg"]["image_size"] == entry.input_size
        assert config.get("quick_gelu", False) == tag.get("quick_gelu", False)


@pytest.mark.parametrize("entry", HUB_ENTRIES, ids=lambda c: c.name)
def test_each_curated_encoder_builds_its_architecture_with_its_preprocessing(entry, tiny_models):
    encoder = build_encoder(entry.name, 32, weights="random")
    mean, std = expected_preprocessing(entry.name)
    assert not encoder.trainable and encoder.input_size == entry.input_size == 224
    assert encoder.mean == pytest.approx(mean) and encoder.std == pytest.approx(std)
    transform = encoder.eval_transform()
    assert transform.size == 224 and transform.mean == encoder.mean
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, encoder.feature_dim) == (2, TINY_WIDTH)
    assert encoder.identity.startswith(entry.spec + "@")
    if entry.spec.startswith("open_clip:"):  # OpenAI's weights were trained with QuickGELU
        block = encoder.body.model.visual.transformer.resblocks[0]
        assert type(block.mlp.gelu).__name__ == "QuickGELU"


def test_dinov2_runs_at_224_px_with_its_position_embeddings_resampled(tiny_models):
    encoder = build_encoder("dinov2-s", 32, weights="random")
    assert tuple(encoder.body.patch_embed.img_size) == (224, 224)
    assert encoder.body.pos_embed.shape[1] == 1 + (224 // 14) ** 2
    assert timm.models.get_pretrained_cfg("vit_small_patch14_dinov2.lvd142m").input_size[-1] == 518


def test_default_weights_are_read_from_the_hub_cache_without_network(
    tiny_models, hub_cache, monkeypatch
):
    monkeypatch.setattr(hub, "offline_reason", lambda: pytest.fail("the hub was probed"))
    source = build_encoder("dinov2-s", 32, weights="random").body
    state = {k: torch.randn_like(v) for k, v in source.state_dict().items()}
    put_in_cache(hub_cache, "timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors", state)
    assert BY_NAME["dinov2-s"].on_disk() and not BY_NAME["dinov2-b"].on_disk()
    loaded = build_encoder("dinov2-s", 32)
    for key, value in loaded.body.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_open_clip_weights_from_the_cache_run_with_the_tags_quick_gelu(
    tiny_models, hub_cache, monkeypatch
):
    monkeypatch.setattr(hub, "offline_reason", lambda: pytest.fail("the hub was probed"))
    source = build_encoder("open_clip:ViT-B-32", 32, weights="random").body.model
    state = {k: torch.randn_like(v) for k, v in source.state_dict().items()}
    repo = "timm/vit_base_patch32_clip_224.openai"
    put_in_cache(hub_cache, repo, "open_clip_model.safetensors", state)
    plain = build_encoder("open_clip:ViT-B-32", 32)  # weights openai, config without QuickGELU
    curated = build_encoder("clip-b32", 32)
    for encoder in (plain, curated):
        block = encoder.body.model.visual.transformer.resblocks[0]
        assert type(block.mlp.gelu).__name__ == "QuickGELU"
        for key, value in encoder.body.model.state_dict().items():
            assert torch.equal(value, state[key]), key
    assert plain.identity.endswith("+quickgelu") and not curated.identity.endswith("+quickgelu")
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(plain(images), curated(images), atol=1e-5)


def test_feature_cache_key_differs_between_encoders_and_weights(tiny_models, hub_cache, tmp_path):
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    small = build_encoder("dinov2-s", 32, weights="random")
    keys = {
        feature_cache.cache_key(small, "clean", images),
        feature_cache.cache_key(build_encoder("dinov2-b", 32, weights="random"), "clean", images),
        feature_cache.cache_key(build_encoder("siglip2-b", 32, weights="random"), "clean", images),
    }
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in small.body.state_dict().items()}, str(weights))
    from_file = build_encoder("dinov2-s", 32, weights=str(weights))
    keys.add(feature_cache.cache_key(from_file, "clean", images))
    save_file({k: v.contiguous() * 2 for k, v in small.body.state_dict().items()}, str(weights))
    import os

    os.utime(weights, (1, 1))  # another file at the same path: the key changes with it
    keys.add(
        feature_cache.cache_key(
            build_encoder("dinov2-s", 32, weights=str(weights)), "clean", images
        )
    )
    assert len(keys) == 5


def test_curated_names_join_when_they_share_preprocessing(tiny_models):
    joined = build_encoder("dinov2-s+dinov2-b", 32, weights="random")
    assert isinstance(joined, JoinedEncoder) and joined.spaces == [TINY_WIDTH, TINY_WIDTH]
    assert joined(torch.randn(1, 3, 224, 224)).shape == (1, 2 * TINY_WIDTH)
    check_encoder_name("clip-b32+clip-l14")
    with pytest.raises(ConfigError, match="share their preprocessing"):
        build_encoder("dinov2-s+clip-b32", 32, weights="random")


def test_unknown_short_name_lists_the_valid_ones():
    with pytest.raises(DeepclustError) as info:
        check_encoder_name("dinov2-x")
    message = str(info.value)
    assert "Did you mean 'dinov2-s'" in message and "\n" not in message
    for entry in CURATED:
        assert entry.name in message
    assert "timm:<model>" in message and "open_clip:<model>" in message and "hf:<model>" in message


def test_list_encoders_shows_every_name_family_and_how_to_get_missing_weights(hub_cache, capsys):
    put_in_cache(hub_cache, "timm/vit_base_patch14_dinov2.lvd142m", "model.safetensors", {})
    assert main(["list", "encoders"]) == 0
    out = capsys.readouterr().out
    for entry in CURATED:
        line = next(x for x in out.splitlines() if x.split()[:1] == [entry.name])
        assert entry.spec in line and f" {entry.feature_dim} " in line, line
        assert f"{entry.input_size}px" in line, line
    for family in ("timm:<model>", "open_clip:<model>", "hf:<model>", "resnet18", "small_cnn"):
        assert family in out
    lines = out.splitlines()
    on_disk = lines[next(i for i, x in enumerate(lines) if x.split()[:1] == ["dinov2-b"])]
    missing = next(i for i, x in enumerate(lines) if x.split()[:1] == ["dinov2-s"])
    assert "on disk" in on_disk and "missing" in lines[missing]
    assert "hf_hub_download('timm/vit_small_patch14_dinov2.lvd142m'" in lines[missing + 1]


def offline(monkeypatch) -> None:
    """No hub: connections fail at once (no real network is touched)."""

    def refuse(*_args, **_kwargs):
        raise OSError("unreachable")

    monkeypatch.setattr(hub.socket, "create_connection", refuse)


@pytest.mark.parametrize("command", ["cluster", "train"])
def test_missing_weights_offline_fail_fast_in_one_line(
    command, hub_cache, tmp_path, monkeypatch, capsys
):
    offline(monkeypatch)
    (tmp_path / "photos").mkdir()
    argv = (
        ["cluster", str(tmp_path / "photos")]
        if command == "cluster"
        else ["train", "--method", "imc-swav", "--dataset", "imagefolder"]
    )
    start = time.perf_counter()
    assert main([*argv, "--encoder", "clip-b32"]) == 2
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and seconds < 2, (seconds, err)
    assert "'clip-b32'" in err and "not on this machine" in err
    assert "hf_hub_download('timm/vit_base_patch32_clip_224.openai'" in err
    assert "--set encoder.weights=PATH" in err


def test_offline_reason_names_the_cause(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert hub.offline_reason() == "HF_HUB_OFFLINE is set"
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    tried = []
    monkeypatch.setattr(hub, "_connects", lambda host, port: tried.append((host, port)) or False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub.offline_reason() == "no connection to proxy.example"
    monkeypatch.delenv("HTTPS_PROXY")
    assert hub.offline_reason() == "no connection to huggingface.co"
    monkeypatch.setattr(hub, "_connects", lambda host, port: True)
    assert hub.offline_reason() is None and tried[0] == ("proxy.example", 3128)


def test_builders_fail_in_one_line_offline_for_short_and_family_names(hub_cache, monkeypatch):
    offline(monkeypatch)
    for name in ("siglip2-b", "timm:vit_small_patch14_dinov2.lvd142m", "open_clip:ViT-B-32"):
        with pytest.raises(DeepclustError) as info:
            build_encoder(name, 32)
        assert f"encoder '{name}'" in str(info.value) and "\n" not in str(info.value)


def test_download_takes_the_first_file_the_repository_has(hub_cache, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    asked = []

    def download(repo, name):
        asked.append(name)
        if name.endswith(".safetensors"):
            raise EntryNotFoundError("no such file")
        return f"/cache/{repo}/{name}"

    monkeypatch.setattr(hub, "offline_reason", lambda: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    weights = hub.HubWeights("org/model", hub.OPEN_CLIP_FILES)
    assert weights.local_file("x") == "/cache/org/model/open_clip_pytorch_model.bin"
    assert asked == list(hub.OPEN_CLIP_FILES)


def test_a_download_failing_half_way_is_one_line(hub_cache, monkeypatch):
    import huggingface_hub

    def broken(repo, name):
        raise RuntimeError("connection reset\nretrying...")

    monkeypatch.setattr(hub, "offline_reason", lambda: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    with pytest.raises(DeepclustError, match="encoder 'clip-l14': downloading") as info:
        BY_NAME["clip-l14"].hub.local_file("clip-l14")
    assert "\n" not in str(info.value) and "connection reset" in str(info.value)


def test_cluster_encoder_flag_sets_the_config_key(monkeypatch, tmp_path):
    from deepclust.practice import folder

    seen = {}

    def fake_cluster(photos, k, out, **kwargs):
        seen.update(kwargs["overrides"])
        raise DeepclustError("stop")

    monkeypatch.setattr(folder, "cluster_folder", fake_cluster)
    argv = ["cluster", str(tmp_path), "--encoder", "efficientnet_lite0"]
    assert main(argv) == 2 and seen["encoder.name"] == "efficientnet_lite0"
    assert main([*argv, "--set", "encoder.name=pixels"]) == 2 and seen["encoder.name"] == "pixels"


def test_estimator_with_a_short_name_fails_in_one_line_offline(hub_cache, tmp_path, monkeypatch):
    from deepclust.practice.estimator import DeepClusterer

    offline(monkeypatch)
    (tmp_path / "photos").mkdir()
    with pytest.raises(DeepclustError, match="encoder 'dinov2-b'") as info:
        DeepClusterer(encoder="dinov2-b", out=tmp_path / "work").fit(tmp_path / "photos")
    assert "\n" not in str(info.value)
