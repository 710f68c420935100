"""Vision-language models: image and text features in one space, L2-normalised.

The image towers are the `open_clip:<model>` and `hf:<name or folder>` encoders of
encoders/pretrained.py (frozen, with CLIP's preprocessing); this module adds their text
towers, so a method holding such an encoder can embed words in the same space:

    open_clip:<model>     the same open_clip model's `encode_text`, tokenised with
                          open_clip.get_tokenizer(<model>); weights as for the image tower:
                          a pretrained tag (encoder.weights=openai, the default, or
                          laion2b_s34b_b79k, ...) or a local checkpoint file
    hf:<name or folder>   transformers' CLIPTextModelWithProjection and tokenizer from the
                          same hub name or folder (a CLIPModel saved with save_pretrained)

The paper's model is CLIP ViT-B/32: `open_clip:ViT-B-32` with weights `openai`, or
`hf:openai/clip-vit-base-patch32`. Offline, give a local checkpoint (open_clip) or folder
(transformers). Text embeddings of a vocabulary are computed once, in batches, and cached
under $DEEPCLUST_CACHE/text keyed by the model and its weights, the prompt template and a
hash of the vocabulary (not cached for `random` weights, which differ at every build).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from deepclust.data.readers import cache_root
from deepclust.data.vocabulary import vocabulary_hash
from deepclust.encoders.base import Encoder, build_encoder
from deepclust.encoders.pretrained import RANDOM, _HFClipImage, _import, _OpenClipImage
from deepclust.errors import ConfigError, DeepclustError, option


class TextEncoder(ABC):
    """A text tower: list of strings -> embeddings [T, D] in its image tower's space."""

    identity: str  # names the model and weights (keys the text-embedding cache)

    @abstractmethod
    def encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """texts -> features [T, D] (not necessarily normalised), on `device`."""


class OpenClipText(TextEncoder):
    """open_clip's encode_text of the model whose image tower the encoder holds."""

    def __init__(self, model: torch.nn.Module, model_name: str, identity: str) -> None:
        self.model, self.identity = model, identity
        self.tokenizer = _import("open_clip", "open_clip_torch").get_tokenizer(model_name)

    def encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(device))


class HFClipText(TextEncoder):
    """transformers' CLIPTextModelWithProjection, loaded on first use from a hub name or folder."""

    def __init__(self, source: str, identity: str) -> None:
        self.source, self.identity = source, identity
        self.model: torch.nn.Module | None = None
        self.tokenizer: Callable | None = None

    def _load(self) -> None:
        transformers = _import("transformers", "transformers")
        try:
            model = transformers.CLIPTextModelWithProjection.from_pretrained(self.source)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.source)
        except Exception as e:
            raise DeepclustError(
                f"could not load the text tower of hf:{self.source} ({type(e).__name__}: {e}). "
                "Offline, give a folder holding a CLIPModel and its tokenizer, both saved with "
                f"save_pretrained: {option('encoder.name', 'hf:/path/to/clip-folder')}."
            ) from e
        self.model = model.eval().requires_grad_(False)

    def encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        if self.model is None:
            self._load()
        assert self.model is not None and self.tokenizer is not None
        self.model.to(device)
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(device) for k, v in tokens.items()}
        return self.model(**tokens).text_embeds


class FunctionText(TextEncoder):
    """Any function of a list of strings (tests, synthetic worlds, custom models)."""

    def __init__(self, fn: Callable[[list[str]], torch.Tensor], identity: str) -> None:
        self.fn, self.identity = fn, identity

    def encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        return self.fn(texts).to(device)


def text_encoder(encoder: Encoder) -> TextEncoder | None:
    """The text tower that shares `encoder`'s feature space, or None (an image-only encoder).

    An encoder may carry one explicitly as `encoder.text_encoder`; open_clip and hf CLIP
    image towers have theirs built here.
    """
    explicit = getattr(encoder, "text_encoder", None)
    if isinstance(explicit, TextEncoder):
        return explicit
    body = encoder.body
    if isinstance(body, _OpenClipImage):
        return OpenClipText(body.model, body.model_name, f"text|{encoder.identity}")
    if isinstance(body, _HFClipImage):
        return HFClipText(body.source, f"text|{encoder.identity}")
    return None


def prompts(nouns: list[str], template: str) -> list[str]:
    """Each noun in the prompt template ('{}' marks the noun), e.g. 'a photo of a {}'."""
    if "{}" not in template:
        raise ConfigError(
            f"the prompt template must contain '{{}}' for the noun; got {template!r}."
        )
    return [template.replace("{}", noun) for noun in nouns]


@torch.no_grad()
def text_embeddings(
    text: TextEncoder,
    nouns: list[str],
    template: str = "a photo of a {}",
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    progress: bool = False,
    unit: bool = True,
) -> torch.Tensor:
    """Unit embeddings [T, D] (float32, CPU) of the prompted nouns, from the cache when present
    (unit=False: the text tower's raw embeddings, cached apart)."""
    from safetensors.torch import load_file

    from deepclust.encoders.cache import save_atomic

    device = torch.device(device)
    folder = cache_root("text")
    target = None
    if folder is not None and f"@{RANDOM}" not in text.identity:
        key = hashlib.blake2b(
            f"{text.identity}|{template}|{vocabulary_hash(nouns)}{'' if unit else '|raw'}".encode(),
            digest_size=16,
        ).hexdigest()
        target = folder / f"{key}.safetensors"
        if target.exists():
            return load_file(str(target))["embeddings"]
    sentences = prompts(nouns, template)
    parts = []
    for start in tqdm(
        range(0, len(sentences), batch_size), desc="text", disable=not progress, leave=False
    ):
        parts.append(text.encode(sentences[start : start + batch_size], device).float().cpu())
    embeddings = torch.cat(parts)
    embeddings = F.normalize(embeddings, dim=1) if unit else embeddings
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        save_atomic({"embeddings": embeddings}, target)
    return embeddings


@dataclass
class VisionLanguageModel:
    """A frozen image tower (with its preprocessing) and its text tower, one feature space."""

    image: Encoder
    text: TextEncoder

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, H, W] (self.image.eval_transform()) -> unit features [B, D]."""
        return F.normalize(self.image(images).float(), dim=1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """texts -> unit features [T, D] on the image tower's device."""
        device = next(self.image.parameters()).device
        return F.normalize(self.text.encode(texts, device).float(), dim=1)


def load_vision_language(
    name: str, weights: str | None = None, input_size: int | None = None, image_size: int = 224
) -> VisionLanguageModel:
    """'open_clip:<model>' or 'hf:<name or folder>' -> VisionLanguageModel (frozen, eval mode).

    weights: open_clip pretrained tag or checkpoint path ('random' for an untrained model).
    """
    encoder = build_encoder(name, image_size, weights=weights, input_size=input_size)
    text = text_encoder(encoder)
    if text is None:
        raise ConfigError(
            f"encoder '{name}' has no text tower: use open_clip:<model> or hf:<CLIP name or folder>."
        )
    return VisionLanguageModel(encoder, text)
