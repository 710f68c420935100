"""The curated short names as encoders (`--encoder clip-b32`), and `deepclust list encoders`.

encoders/catalog.py holds the names, their specs, sizes and weights; here each hub entry
is registered as an encoder that builds its family model (timm:, open_clip:) with the
entry's weights and input size, and `listing()` writes what `deepclust list encoders`
prints: every curated name with its spec, feature size, input size, whether its weights
are on this disk (looked up without the network) and the one command that gets them.
"""

from __future__ import annotations

from dataclasses import replace

from deepclust.encoders.base import (
    ENCODERS,
    FAMILIES,
    FAMILY_HELP,
    Encoder,
    EncoderEntry,
    EncoderRequest,
)
from deepclust.encoders.catalog import CURATED, Curated


def build_curated(entry: Curated, req: EncoderRequest) -> Encoder:
    """The family encoder at the entry's input size and weights (req's when it sets them);
    with the default weights, a fast one-line failure first when they are missing offline."""
    if req.weights is None and entry.hub is not None:
        entry.hub.local_file(entry.name)
    family, model = entry.spec.split(":", 1)
    req = replace(
        req,
        weights=req.weights if req.weights is not None else entry.weights,
        input_size=req.input_size or entry.input_size,
    )
    return FAMILIES.get(family)(model, req)


for _entry in CURATED:
    if _entry.hub is not None:  # the Lites are registered by encoders/pretrained.py
        ENCODERS.register(_entry.name)(
            EncoderEntry(
                build=lambda req, e=_entry: build_curated(e, req),
                description=_entry.about,
                pretrained=True,
            )
        )


def listing() -> list[str]:
    """The lines of `deepclust list encoders`: curated names, from-scratch ones, families."""
    lines = ["pretrained, frozen (--encoder NAME; join several with '+', e.g. dinov2-s+dinov2-b):"]
    lines.append(f"  {'name':19s}{'spec':43s}{'dim':>5s}{'input':>6s}  weights")
    lines.append(
        "  (input: the encoder's own size; the frozen configs, so `cluster`, run at 224 px)"
    )
    for c in CURATED:
        here = "on disk" if c.on_disk() else "missing"
        lines.append(
            f"  {c.name:19s}{c.spec:43s}{c.feature_dim:5d}{c.input_size:5d}px  {here}  {c.about}"
        )
        if here == "missing":
            lines.append(f"  {'':19s}get: {c.fetch_command()}")
    lines.append("trained from scratch:")
    for name in ENCODERS.names():
        if not ENCODERS.get(name).pretrained:
            lines.append(f"  {name:19s}{ENCODERS.get(name).description}")
    lines.append("model zoo families (--encoder FAMILY:MODEL):")
    for prefix in FAMILIES.names():
        lines.append(f"  {prefix + ':<model>':19s}{FAMILY_HELP[prefix]}")
    return lines
