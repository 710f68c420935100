"""The report's photo sprites: every photo in its tile, at the size it is shown."""

import base64
import io

import numpy as np
import torch
from PIL import Image

from deepclust.evaluation import gallery


def test_sprite_tiles_row_by_row_with_white_padding():
    imgs = torch.arange(5 * 3 * 2 * 3, dtype=torch.uint8).reshape(5, 3, 2, 3)
    sheet = gallery.sprite_pixels(imgs, (2, 3), columns=2)
    assert sheet.shape == (3 * 2, 2 * 3, 3)
    for i in range(5):
        r, c = divmod(i, 2)
        tile = sheet[r * 2 : r * 2 + 2, c * 3 : c * 3 + 3]
        assert np.array_equal(tile, imgs[i].permute(1, 2, 0).numpy()), i
    assert (sheet[4:, 3:] == 255).all()  # the sixth tile is unused


def test_small_photos_kept_and_enlarged_large_ones_shrunk():
    assert gallery.tile_size(32, 32) == ((32, 32), 2)
    assert gallery.tile_size(8, 8) == ((8, 8), 9)
    assert gallery.tile_size(224, 224) == ((72, 72), 1)
    assert gallery.tile_size(224, 112) == ((72, 36), 1)
    big = torch.full((2, 3, 224, 224), 200, dtype=torch.uint8)
    assert (gallery.sprite_pixels(big, (72, 72), 2) == 200).all()  # shrunk, not cropped


def _decoded(rule: str) -> Image.Image:
    uri = rule.split("url(", 1)[1].split(")", 1)[0]
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_tiles_sit_where_the_css_shows_them():
    images = torch.zeros(300, 3, 32, 32, dtype=torch.uint8)
    sprites = gallery.Sprites(images)
    tiles = sprites.tiles(np.arange(300)[::-1].copy())
    assert len(tiles) == 300 and len(sprites.rules) == 2  # 256 + 44 photos
    assert {t.sprite for t in tiles[:256]} == {"s0"} and {t.sprite for t in tiles[256:]} == {"s1"}
    assert tiles[0].position == "0px 0px" and tiles[17].position == "-64px -64px"  # shown 2x
    assert tiles[256].position == "0px 0px" and tiles[299].position == "-704px -128px"
    assert _decoded(sprites.rules[0]).size == (16 * 32, 16 * 32)
    assert "background-size:1024px 1024px" in sprites.rules[0]
    assert _decoded(sprites.rules[1]).size == (16 * 32, 3 * 32)
    css = sprites.css()
    assert css.startswith(".t{width:64px;height:64px;image-rendering:pixelated}")
