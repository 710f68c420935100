"""Every photo of a run as a small thumbnail in the report, with no script.

Thumbnails are drawn from the images the run already holds in memory (uint8 [N, 3, H, W],
the store's copies: no original is read again) into *sprites*: one JPEG per block of up to
SPRITE_PHOTOS photos, tiled SPRITE_COLUMNS wide. A CSS class puts a sprite behind each
photo's element and an inline background-position picks its tile. One JPEG per photo would
pay JPEG's header (about 600 bytes) per photo: on CIFAR-10's 32 px photos the sprites take
410 bytes of the page per photo against 849 for a JPEG each (both base64;
benchmarks/results/report_10k.json, sprite_choice). A browser decodes a sprite only
when an element that shows it is drawn, so the photos inside a closed <details> cost their
bytes in the file and nothing else.

Small images are kept at their own size and enlarged by the browser (pixelated, an integer
factor near TARGET px); larger ones are shrunk (antialiased) to TARGET px on the longer side.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

SPRITE_COLUMNS = 16
SPRITE_PHOTOS = 256  # photos per sprite: a browser decodes only the blocks it draws
TARGET = 72  # px: the size thumbnails are shown at, near enough
QUALITY = 80  # JPEG quality of the sprites


@dataclass(frozen=True)
class Tile:
    """Where one photo is drawn: its sprite's CSS class and the background-position of its
    tile, in shown px (zero or negative)."""

    sprite: str
    x: int
    y: int

    @property
    def position(self) -> str:
        return f"{self.x}px {self.y}px"


def thumb_scale(size: int, target: int = TARGET) -> int:
    """Integer nearest-neighbour upscale factor that brings `size` px near `target` px."""
    return max(1, round(target / max(size, 1)))


def tile_size(height: int, width: int) -> tuple[tuple[int, int], int]:
    """((h, w) of a tile in the sprite, the factor it is shown enlarged by) for [H, W] images."""
    longest = max(height, width, 1)
    if longest <= TARGET:
        return (height, width), thumb_scale(longest)
    f = TARGET / longest
    return (max(1, round(height * f)), max(1, round(width * f))), 1


def sprite_pixels(images: torch.Tensor, cell: tuple[int, int], columns: int) -> np.ndarray:
    """uint8 [n, 3, H, W] -> one uint8 [rows * h, columns * w, 3] picture, tiles row by row,
    each image resized to cell (h, w) (antialiased); the unused tiles white."""
    n, (h, w) = len(images), cell
    if tuple(images.shape[-2:]) != cell:
        small = torch.nn.functional.interpolate(
            images.float(), size=cell, mode="bilinear", antialias=True, align_corners=False
        )
        images = small.round().clamp(0, 255).to(torch.uint8)
    rows = -(-n // columns)
    grid = np.full((rows * columns, h, w, 3), 255, dtype=np.uint8)
    grid[:n] = images.permute(0, 2, 3, 1).numpy()
    return grid.reshape(rows, columns, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(rows * h, -1, 3)


def jpeg_data_uri(pixels: np.ndarray, quality: int = QUALITY) -> str:
    """uint8 [H, W, 3] -> 'data:image/jpeg;base64,...'."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Sprites:
    """The sprites of one page: `tiles(index)` draws the photos it is given (in that order)
    and says where each sits; `css()` is the style sheet for all of them."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images  # uint8 [N, 3, H, W]
        self.cell, self.scale = tile_size(*images.shape[-2:])
        self.rules: list[str] = []

    @property
    def shown(self) -> tuple[int, int]:
        """(h, w) in px of a thumbnail on the page."""
        return self.cell[0] * self.scale, self.cell[1] * self.scale

    def tiles(self, index: np.ndarray) -> list[Tile]:
        """A Tile per photo of index [n], drawn into new sprites of up to SPRITE_PHOTOS each."""
        out: list[Tile] = []
        sh, sw = self.shown
        for start in range(0, len(index), SPRITE_PHOTOS):
            block = torch.as_tensor(np.asarray(index[start : start + SPRITE_PHOTOS]))
            columns = min(SPRITE_COLUMNS, len(block))
            name = f"s{len(self.rules)}"
            pixels = sprite_pixels(self.images[block], self.cell, columns)
            size = f"{pixels.shape[1] * self.scale}px {pixels.shape[0] * self.scale}px"
            self.rules.append(
                f".{name}{{background-image:url({jpeg_data_uri(pixels)});background-size:{size}}}"
            )
            out += [
                Tile(name, -(i % columns) * sw, -(i // columns) * sh) for i in range(len(block))
            ]
        return out

    def css(self) -> str:
        """The thumbnails' size and every sprite's rule, one per line."""
        sh, sw = self.shown
        crisp = ";image-rendering:pixelated" if self.scale > 1 else ""
        return "\n".join([f".t{{width:{sw}px;height:{sh}px{crisp}}}", *self.rules])
