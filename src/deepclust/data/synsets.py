"""ImageNet subsets used as deep-clustering benchmarks since DAC (Chang et al. 2017).

ImageNet-10 and ImageNet-Dogs are the subsets reported by DAC, DCCM, PICA, Contrastive
Clustering (Li et al. 2021) and later work. Each list is (WordNet id, readable name),
sorted by WordNet id, so label i is the i-th entry (the order torchvision's ImageFolder
would give the same class folders).
"""

from __future__ import annotations

IMAGENET10: tuple[tuple[str, str], ...] = (
    ("n02056570", "king penguin"),
    ("n02085936", "Maltese dog"),
    ("n02128757", "snow leopard"),
    ("n02690373", "airliner"),
    ("n02692877", "airship"),
    ("n03095699", "container ship"),
    ("n04254680", "soccer ball"),
    ("n04285008", "sports car"),
    ("n04467665", "trailer truck"),
    ("n07747607", "orange"),
)

IMAGENET_DOGS: tuple[tuple[str, str], ...] = (
    ("n02085936", "Maltese dog"),
    ("n02086646", "Blenheim spaniel"),
    ("n02088238", "basset"),
    ("n02091467", "Norwegian elkhound"),
    ("n02097130", "giant schnauzer"),
    ("n02099601", "golden retriever"),
    ("n02101388", "Brittany spaniel"),
    ("n02101556", "clumber"),
    ("n02102177", "Welsh springer spaniel"),
    ("n02105056", "groenendael"),
    ("n02105412", "kelpie"),
    ("n02105855", "Shetland sheepdog"),
    ("n02107142", "Doberman"),
    ("n02110958", "pug"),
    ("n02112137", "chow"),
)

SUBSETS: dict[str, tuple[tuple[str, str], ...]] = {
    "imagenet10": IMAGENET10,
    "imagenet_dogs": IMAGENET_DOGS,
}
