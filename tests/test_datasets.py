"""Dataset readers on tiny copies written in each dataset's real on-disk format."""

from __future__ import annotations

import gzip
import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_stl10
from deepclust.data import readers
from deepclust.data.datasets import (
    DATASETS,
    DatasetInfo,
    dataset_info,
    load_protocol,
    load_split,
    resolve_dir,
)
from deepclust.data.synsets import IMAGENET10, IMAGENET_DOGS
from deepclust.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Each test gets its own empty data root and decode cache."""
    monkeypatch.setenv("DEEPCLUST_DATA", str(tmp_path / "data-root"))
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPCLUST_NO_CACHE", raising=False)


def _rand_images(n: int, side: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, 3, side, side), dtype=np.uint8)


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _save_png(path: Path, chw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))).save(path, format="PNG")


def _save_jpeg(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)


# --------------------------------------------------------------------------- CIFAR


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory):
    """cifar-10-batches-py with 5 train batches of 2 images and a test batch of 3."""
    root = tmp_path_factory.mktemp("c10") / "cifar-10-batches-py"
    names = [f"class{i}".encode() for i in range(10)]
    _dump(root / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    train = _rand_images(10, 32)
    train_labels = [i % 10 for i in range(10)]
    for b in range(5):
        chunk = train[2 * b : 2 * b + 2]
        _dump(
            root / f"data_batch_{b + 1}",
            {b"data": chunk.reshape(2, -1), b"labels": train_labels[2 * b : 2 * b + 2]},
        )
    test = _rand_images(3, 32)
    _dump(root / "test_batch", {b"data": test.reshape(3, -1), b"labels": [7, 8, 9]})
    return root, train, np.array(train_labels), test


def test_cifar10_reads_pickles_exactly(cifar10_dir):
    root, train, train_labels, test = cifar10_dir
    s = load_split("cifar10", "train", root.parent)  # the folder holding cifar-10-batches-py
    assert s.images.dtype == torch.uint8 and s.images.shape == (10, 3, 32, 32)
    assert torch.equal(s.images, torch.from_numpy(train))
    assert s.labels.tolist() == train_labels.tolist() and s.labels.dtype == torch.int64
    assert s.class_names == [f"class{i}" for i in range(10)]
    t = load_split("cifar10", "test", root)  # the batches folder itself also works
    assert torch.equal(t.images, torch.from_numpy(test)) and t.labels.tolist() == [7, 8, 9]
    assert t.name == "cifar10/test"


def test_cifar10_data_dir_subfolder_and_default_root(cifar10_dir, tmp_path, monkeypatch):
    root = cifar10_dir[0]
    parent = tmp_path / "mydata"
    (parent / "cifar10").mkdir(parents=True)
    (parent / "cifar10" / "cifar-10-batches-py").symlink_to(root)
    assert len(load_split("cifar10", "test", parent)) == 3  # DIR/<default_dir>
    monkeypatch.setenv("DEEPCLUST_DATA", str(parent))
    assert len(load_split("cifar10", "test")) == 3  # $DEEPCLUST_DATA/<default_dir>


def test_cifar10_resize_and_protocols(cifar10_dir):
    root = cifar10_dir[0]
    s = load_split("cifar10", "test", root, image_size=16)
    assert s.images.shape == (3, 3, 16, 16)
    fit, ev = load_protocol("cifar10", "train-test", root)
    assert (len(fit), len(ev)) == (10, 3) and fit.name == "cifar10/train"
    fit, ev = load_protocol("cifar10", "all", root)
    assert len(fit) == len(ev) == 13 and torch.equal(fit.images, ev.images)
    with pytest.raises(DataError, match="no unlabeled split"):
        load_protocol("cifar10", "all", root, include_unlabeled=True)
    with pytest.raises(ConfigError, match="unknown protocol"):
        load_protocol("cifar10", "both", root)


def test_cifar10_partial_batches_warn(tmp_path, cifar10_dir):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in ("batches.meta", "data_batch_1", "data_batch_2", "test_batch"):
        (root / name).write_bytes((cifar10_dir[0] / name).read_bytes())
    with pytest.warns(UserWarning, match="only 2 of the 5"):
        s = load_split("cifar10", "train", tmp_path)
    assert len(s) == 4


def test_cifar10_corrupt_pickle(tmp_path, cifar10_dir):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    (root / "batches.meta").write_bytes((cifar10_dir[0] / "batches.meta").read_bytes())
    (root / "test_batch").write_bytes((cifar10_dir[0] / "test_batch").read_bytes()[:500])
    with pytest.raises(DataError, match=r"test_batch.*truncated"):
        load_split("cifar10", "test", tmp_path)


def test_cifar100_fine_and_coarse(tmp_path):
    root = tmp_path / "cifar-100-python"
    fine = [f"fine{i}".encode() for i in range(100)]
    coarse = [f"coarse{i}".encode() for i in range(20)]
    _dump(root / "meta", {b"fine_label_names": fine, b"coarse_label_names": coarse})
    imgs = {s: _rand_images(4, 32) for s in ("train", "test")}
    for split, x in imgs.items():
        _dump(
            root / split,
            {
                b"data": x.reshape(4, -1),
                b"fine_labels": [0, 42, 99, 5],
                b"coarse_labels": [4, 1, 19, 0],
            },
        )
    s = load_split("cifar100", "train", tmp_path)
    assert s.labels.tolist() == [0, 42, 99, 5] and len(s.class_names) == 100
    assert s.class_names[42] == "fine42"
    assert torch.equal(s.images, torch.from_numpy(imgs["train"]))
    c = load_split("cifar20", "test", tmp_path)
    assert c.labels.tolist() == [4, 1, 19, 0] and c.class_names[19] == "coarse19"
    assert torch.equal(c.images, torch.from_numpy(imgs["test"]))
    assert dataset_info("cifar20").num_classes == 20


# --------------------------------------------------------------------------- STL-10


@pytest.fixture(scope="module")
def stl_dir(tmp_path_factory):
    data = {
        "train": _rand_images(3, 96),
        "test": _rand_images(2, 96),
        "unlabeled": _rand_images(4, 96),
    }
    root = write_stl10(
        tmp_path_factory.mktemp("stl") / "stl10_binary", data, {"train": [1, 5, 10], "test": [2, 3]}
    )
    return root, data


def test_stl10_column_major_and_labels(stl_dir):
    root, data = stl_dir
    s = load_split("stl10", "train", root.parent)
    assert s.images.shape == (3, 3, 96, 96)
    assert torch.equal(s.images, torch.from_numpy(data["train"]))
    assert s.labels.tolist() == [0, 4, 9] and s.class_names[9] == "c9"
    u = load_split("stl10", "unlabeled", root)
    assert torch.equal(u.images, torch.from_numpy(data["unlabeled"]))
    assert u.labels.tolist() == [-1] * 4 and not u.has_labels


def test_stl10_protocols_with_unlabeled(stl_dir):
    root = stl_dir[0]
    fit, ev = load_protocol("stl10", "train-test", root, include_unlabeled=True)
    assert (len(fit), len(ev)) == (7, 2)
    assert fit.labels.tolist() == [0, 4, 9, -1, -1, -1, -1] and ev.labels.tolist() == [1, 2]
    fit, ev = load_protocol("stl10", "all", root, include_unlabeled=True)
    assert (len(fit), len(ev)) == (9, 5)
    assert torch.equal(ev.images, fit.images[:5]) and ev.labels.tolist() == [0, 4, 9, 1, 2]
    assert ev.class_names[0] == "c0"
    fit, ev = load_protocol("stl10", "all", root)
    assert len(fit) == len(ev) == 5


def test_stl10_truncated(tmp_path, stl_dir):
    root = tmp_path / "stl10_binary"
    root.mkdir()
    (root / "test_X.bin").write_bytes((stl_dir[0] / "test_X.bin").read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        load_split("stl10", "test", tmp_path)


# --------------------------------------------------------------------------- Tiny ImageNet


def test_tiny_imagenet(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02000001", "n01000002"]
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01000002\tcat, moggy\nn02000001\tdog\nn09999999\tother\n")
    for w in wnids:
        for k in range(2):
            _save_jpeg(root / "train" / w / "images" / f"{w}_{k}.JPEG", 64, 64)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
    _save_jpeg(root / "val" / "images" / "val_0.JPEG", 64, 64)
    _save_jpeg(root / "val" / "images" / "val_1.JPEG", 64, 64)
    (root / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02000001\t0\t0\t10\t10\nval_1.JPEG\tn01000002\t1\t1\t5\t5\n"
    )
    s = load_split("tiny_imagenet", "train", tmp_path)
    assert s.images.shape == (4, 3, 64, 64) and s.labels.tolist() == [0, 0, 1, 1]
    assert s.class_names == ["cat", "dog"]  # sorted wnids, names from words.txt
    _, ev = load_protocol("tiny_imagenet", "train-test", root)
    assert ev.labels.tolist() == [1, 0] and ev.paths[0].endswith("val_0.JPEG")


# --------------------------------------------------------------------------- ImageNet subsets


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    wnids = {w for w, _ in IMAGENET10 + IMAGENET_DOGS} | {"n01440764"}  # plus an unused class
    for w in sorted(wnids):
        _save_jpeg(root / "train" / w / f"{w}_1.JPEG", 50, 40)
        _save_jpeg(root / "train" / w / f"{w}_2.JPEG", 40, 60)
    for w, _ in IMAGENET_DOGS:
        _save_jpeg(root / "val" / w / f"ILSVRC2012_val_{w}.JPEG", 70, 50)
    return root


def test_imagenet10_from_train_folders(imagenet_dir, tmp_path):
    s = load_split("imagenet10", "train", imagenet_dir)
    assert s.images.shape == (20, 3, 96, 96) and len(s.class_names) == 10
    assert s.labels.tolist() == [i // 2 for i in range(20)]
    assert s.class_names[0] == "king penguin"
    assert load_split("imagenet10", "train", imagenet_dir, image_size=24).image_size == (24, 24)
    d = load_split("imagenet_dogs", "test", imagenet_dir)
    assert d.images.shape == (15, 3, 96, 96) and d.labels.tolist() == list(range(15))
    # ImageNet-10's val folders are missing here: test split fails, "all" uses train only
    with pytest.raises(DataError, match="lacks the class folder"):
        load_split("imagenet10", "test", imagenet_dir)
    fit, ev = load_protocol("imagenet_dogs", "all", imagenet_dir)
    assert len(fit) == len(ev) == 45


def test_imagenet_without_val(tmp_path):
    for w, _ in IMAGENET10:
        _save_jpeg(tmp_path / "imagenet" / "train" / w / "a.JPEG", 30, 30)
    with pytest.raises(DataError, match="val/<wnid>"):
        load_split("imagenet10", "test", tmp_path)
    with pytest.raises(DataError, match="--protocol all"):
        load_protocol("imagenet10", "train-test", tmp_path)
    fit, _ = load_protocol("imagenet10", "all", tmp_path, image_size=16)
    assert fit.images.shape == (10, 3, 16, 16)


def test_synset_lists():
    assert len(IMAGENET10) == 10 and len(IMAGENET_DOGS) == 15
    for subset in (IMAGENET10, IMAGENET_DOGS):
        wnids = [w for w, _ in subset]
        assert wnids == sorted(set(wnids))
        assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)


# --------------------------------------------------------------------------- image folders


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    """train/ and test/ of class folders holding 8x8 PNGs, with their pixels."""
    root = tmp_path_factory.mktemp("folder")
    pixels = {}
    for split, n in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog"):
            for k in range(n):
                x = _rand_images(1, 8)[0]
                rel = f"{split}/{cls}/{k}.PNG" if k == 0 else f"{split}/{cls}/{k}.png"
                _save_png(root / rel, x)
                pixels[rel] = x
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root, pixels


def test_imagefolder_train_test_roundtrip(png_folder):
    root, pixels = png_folder
    s = load_split("imagefolder", "train", root)
    assert s.images.shape == (6, 3, 8, 8) and s.class_names == ["cat", "dog"]
    assert s.labels.tolist() == [0, 0, 0, 1, 1, 1]
    for img, path in zip(s.images, s.paths, strict=True):
        rel = Path(path).relative_to(root).as_posix()
        assert torch.equal(img, torch.from_numpy(pixels[rel]))
    fit, ev = load_protocol("imagefolder", "train-test", root)
    assert (len(fit), len(ev)) == (6, 2) and ev.labels.tolist() == [0, 1]
    fit, ev = load_protocol("imagefolder", "all", root, image_size=4)
    assert fit.images.shape == (8, 3, 4, 4)


def test_imagefolder_class_folders_single_split(png_folder):
    train = png_folder[0] / "train"
    s = load_split("imagefolder", "train", train)
    assert len(s) == 6 and s.name == "train/train"
    with pytest.raises(DataError, match="--protocol all"):
        load_protocol("imagefolder", "train-test", train)
    with pytest.raises(DataError, match="no test/ folder"):
        load_split("imagefolder", "test", train)


def test_imagefolder_flat_is_unlabelled(tmp_path):
    for k in range(3):
        _save_png(tmp_path / "flat" / f"img{k}.png", _rand_images(1, 5)[0])
    fit, ev = load_protocol("imagefolder", "all", tmp_path / "flat")
    assert fit.labels.tolist() == [-1, -1, -1] and fit.class_names == [] and not ev.has_labels


def test_imagefolder_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_split("imagefolder", "train", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images found.*jpg, jpeg, png, bmp, gif, webp, tif"):
        load_split("imagefolder", "train", tmp_path / "empty")


def test_imagefolder_differing_sizes(tmp_path):
    _save_png(tmp_path / "a" / "x1.png", _rand_images(1, 8)[0])
    Image.new("RGB", (10, 6)).save(tmp_path / "a" / "x2.png")
    with pytest.raises(DataError, match=r"x1\.png is 8x8 but .*x2\.png is 10x6.*data\.image_size"):
        load_split("imagefolder", "train", tmp_path / "a")
    s = load_split("imagefolder", "train", tmp_path / "a", image_size=6)
    assert s.images.shape == (2, 3, 6, 6)


@pytest.fixture
def folder_with_bad_images(tmp_path):
    root = tmp_path / "bad"
    for k in range(3):
        _save_png(root / "ok" / f"good{k}.png", _rand_images(1, 8)[0])
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    (root / "ok" / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "ok" / "junk.jpg").write_bytes(b"this is not a jpeg")
    return root


def test_bad_images_skip_warns_once(folder_with_bad_images):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = load_split("imagefolder", "train", folder_with_bad_images)
    assert len(s) == 3 and all("good" in p for p in s.paths)
    messages = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(messages) == 1
    assert "skipped 2" in messages[0] and "cut.png" in messages[0] and "junk.jpg" in messages[0]
    with pytest.warns(UserWarning, match="skipped 2"):  # a cached load reports them again
        load_split("imagefolder", "train", folder_with_bad_images)


def test_bad_images_fail(folder_with_bad_images):
    with pytest.raises(DataError, match=r"cannot decode image .*(cut\.png|junk\.jpg)"):
        load_split("imagefolder", "train", folder_with_bad_images, bad_images="fail")
    with pytest.raises(ConfigError, match="bad_images"):
        load_split("imagefolder", "train", folder_with_bad_images, bad_images="ignore")


def test_truncated_jpeg_is_caught(tmp_path):
    _save_jpeg(tmp_path / "j" / "a.jpg", 32, 32)
    _save_jpeg(tmp_path / "j" / "b.jpg", 32, 32)
    data = (tmp_path / "j" / "b.jpg").read_bytes()
    (tmp_path / "j" / "b.jpg").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match=r"b\.jpg"):
        load_split("imagefolder", "train", tmp_path / "j", bad_images="fail")


def test_decode_cache_hit_and_invalidation(png_folder, tmp_path, monkeypatch):
    root = png_folder[0]
    first = load_split("imagefolder", "train", root)

    def boom(path, size):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(readers, "decode_image", boom)
    again = load_split("imagefolder", "train", root)
    assert torch.equal(first.images, again.images) and first.paths == again.paths
    # a different size or a changed folder is a different cache entry
    monkeypatch.undo()
    monkeypatch.setenv("DEEPCLUST_DATA", str(tmp_path / "data-root"))
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy"
    for rel, x in png_folder[1].items():
        _save_png(copy / rel, x)
    load_split("imagefolder", "train", copy)
    _save_png(copy / "train" / "cat" / "extra.png", _rand_images(1, 8)[0])
    assert len(load_split("imagefolder", "train", copy)) == 7
    stores = tmp_path / "cache" / "stores"
    assert len(list(stores.glob("imagefolder-copy_train-*.npz"))) == 1  # stale entry pruned
    monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")
    calls = []
    real = readers.decode_image
    monkeypatch.setattr(readers, "decode_image", lambda p, s: calls.append(p) or real(p, s))
    load_split("imagefolder", "train", copy)
    assert len(calls) == 7


# --------------------------------------------------------------------------- digits, Fashion-MNIST


def test_digits_single_split():
    s = load_split("digits", "train")
    assert s.images.shape == (1797, 3, 8, 8) and s.images.dtype == torch.uint8
    assert int(s.images.max()) == 255 and torch.equal(s.images[:, 0], s.images[:, 2])
    assert s.class_names == [str(i) for i in range(10)]
    with pytest.raises(DataError, match="--protocol all"):
        load_protocol("digits", "train-test")
    with pytest.raises(DataError, match="no split 'test'"):
        load_split("digits", "test")


def _idx(magic: int, arr: np.ndarray) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def fashion_arrays():
    return {
        "train": (RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.array([0, 9, 3, 3, 1])),
        "t10k": (RNG.integers(0, 256, (2, 28, 28), dtype=np.uint8), np.array([8, 2])),
    }


def _write_fashion(folder: Path, arrays, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, (x, y) in arrays.items():
        for stem, blob in (
            (f"{prefix}-images-idx3-ubyte", _idx(2051, x)),
            (f"{prefix}-labels-idx1-ubyte", _idx(2049, y)),
        ):
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / stem).write_bytes(blob)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path, monkeypatch, fashion_arrays, gz):
    _write_fashion(tmp_path / "data-root" / "fashion-mnist", fashion_arrays, gz)
    s = load_split("fashion_mnist", "train")  # found under $DEEPCLUST_DATA/fashion-mnist
    x, y = fashion_arrays["train"]
    assert s.images.shape == (5, 3, 28, 28)
    assert torch.equal(s.images[:, 1], torch.from_numpy(x)) and s.labels.tolist() == y.tolist()
    assert s.class_names[0] == "T-shirt/top" and s.class_names[9] == "Ankle boot"
    _, ev = load_protocol("fashion_mnist", "train-test")
    assert ev.labels.tolist() == [8, 2]


def test_fashion_mnist_torchvision_layout_and_bad_magic(tmp_path, fashion_arrays):
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    _write_fashion(raw, fashion_arrays, gz=True)
    assert len(load_split("fashion_mnist", "test", tmp_path / "tv")) == 2
    x, _ = fashion_arrays["t10k"]
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(2051, x)))  # swapped
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        load_split("fashion_mnist", "test", tmp_path / "tv")


def test_fashion_mnist_folder_with_the_test_files_only(tmp_path, fashion_arrays):
    _write_fashion(tmp_path / "t10k-only", {"t10k": fashion_arrays["t10k"]}, gz=True)
    fit, ev = load_protocol("fashion_mnist", "all", tmp_path / "t10k-only")
    assert fit.name == "fashion_mnist/test" and fit.labels.tolist() == [8, 2] and len(ev) == 2
    with pytest.raises(DataError, match="single split"):
        load_protocol("fashion_mnist", "train-test", tmp_path / "t10k-only")


# --------------------------------------------------------------------------- registry, errors, download


def test_registry_and_info():
    assert {"cifar10", "cifar100", "cifar20", "stl10", "tiny_imagenet", "imagenet10"} <= set(
        DATASETS.names()
    )
    info = dataset_info("stl10")
    assert isinstance(info, DatasetInfo) and info.splits == ("train", "test", "unlabeled")
    assert dataset_info("imagenet_dogs").num_classes == 15
    with pytest.raises(DataError, match="Did you mean 'cifar10'"):
        dataset_info("cifar-10")


def test_missing_dataset_names_paths_and_how_to_get(tmp_path):
    with pytest.raises(DataError) as err:
        load_split("cifar10", "train", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in msg
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in msg and "--download" in msg
    with pytest.raises(DataError, match=r"data-root/cifar10"):
        load_split("cifar10", "train")
    with pytest.raises(DataError, match="cannot be downloaded automatically"):
        load_split("imagenet10", "train", tmp_path, download=True)


def test_download_uses_torchvision_then_own_reader(tmp_path, monkeypatch, cifar10_dir):
    import torchvision.datasets as tvd

    def fake_cifar10(root, download, train):
        assert download
        dst = Path(root) / "cifar-10-batches-py"
        dst.mkdir(parents=True)
        for f in cifar10_dir[0].iterdir():
            (dst / f.name).write_bytes(f.read_bytes())

    monkeypatch.setattr(tvd, "CIFAR10", fake_cifar10)
    s = load_split("cifar10", "test", tmp_path / "dl", download=True)
    assert len(s) == 3 and resolve_dir("cifar10", tmp_path / "dl").name == "cifar-10-batches-py"

    def offline(**kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvd, "CIFAR100", offline)
    with pytest.raises(DataError, match=r"network unreachable.*cifar-100-python"):
        load_split("cifar100", "train", tmp_path / "dl2", download=True)
