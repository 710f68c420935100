"""Dataset registry and loading: name + split (or protocol) -> in-memory `ImageSet`.

Where the files are looked for (`data_dir` is what the user passes as --data-dir):
  * data_dir given: data_dir itself if it holds the dataset's files, else data_dir/<default_dir>;
  * data_dir None: $DEEPCLUST_DATA/<default_dir> (default ~/.cache/deepclust/data/<default_dir>),
    then any extra standard place (e.g. Debian's /usr/share/datasets/fashion-mnist).

Protocols: "train-test" fits on train and evaluates on test; "all" fits and evaluates on
train+test joined (datasets with a single split support only "all"). `all_splits` narrows
what "all" joins: ("train",) fits and evaluates on the train split alone, as DigPro's
authors do on ImageNet-10, ImageNet-Dogs and Tiny-ImageNet (docs/fidelity.md).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepclust.data import disk_store, readers
from deepclust.data.store import ImageSet
from deepclust.data.synsets import SUBSETS
from deepclust.errors import ConfigError, DataError, DeepclustError, option
from deepclust.registry import Registry

PROTOCOLS: tuple[str, ...] = ("train-test", "all")
LABELLED_SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where it lives.

    image_size: default stored side in px (None = keep the native size, which must be uniform).
    default_dir: sub-folder name under the data root.
    how_to_get: one-line instructions shown when the dataset is missing.
    """

    name: str
    description: str
    splits: tuple[str, ...]
    num_classes: int | None
    image_size: int | None
    default_dir: str
    how_to_get: str


@dataclass(frozen=True)
class ReadOptions:
    """Options handed to a reader. image_size is already defaulted from DatasetInfo."""

    image_size: int | None
    bad_images: str


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its info and the functions that find, read and fetch it.

    locate(folder): the folder that directly holds the files if `folder` holds the dataset
        (possibly in a known sub-folder such as cifar-10-batches-py), else None.
        None for datasets that need no files.
    read(root, split, options): the split as an ImageSet; root is what locate returned.
    expected: a file that shows the dataset is there, relative to a candidate folder (errors).
    available: the splits present under root, when that depends on the files.
    download(folder): fetch and extract the dataset into folder.
    extra_dirs: further absolute folders to try when no data_dir is given.
    """

    info: DatasetInfo
    read: Callable[[Path, str, ReadOptions], ImageSet]
    locate: Callable[[Path], Path | None] | None
    expected: str = ""
    available: Callable[[Path], tuple[str, ...]] | None = None
    download: Callable[[Path], None] | None = None
    extra_dirs: tuple[str, ...] = ()


DATASETS: Registry[DatasetEntry] = Registry("dataset")


# --------------------------------------------------------------------------- public API


def dataset_info(name: str) -> DatasetInfo:
    """The DatasetInfo of a registered dataset (DataError for an unknown name)."""
    return _entry(name).info


def data_root() -> Path:
    """$DEEPCLUST_DATA, else ~/.cache/deepclust/data."""
    return Path(os.environ.get("DEEPCLUST_DATA") or "~/.cache/deepclust/data").expanduser()


def resolve_dir(name: str, data_dir: str | Path | None = None, download: bool = False) -> Path:
    """The folder holding `name`'s files (see module docstring); DataError if missing."""
    entry = _entry(name)
    info = entry.info
    if entry.locate is None:
        return Path(data_dir or data_root()).expanduser()
    if data_dir is not None:
        given = Path(data_dir).expanduser()
        candidates = [given, given / info.default_dir]
    else:
        candidates = [data_root() / info.default_dir, *(Path(d) for d in entry.extra_dirs)]
    for folder in candidates:
        if folder.is_dir() and (found := entry.locate(folder)) is not None:
            return found
    if download:
        return _download(entry, candidates[0])
    looked = " or ".join(str(c / entry.expected) for c in candidates)
    missing = ""
    if data_dir is not None and not candidates[0].exists():
        missing = f"the data folder {candidates[0]} does not exist. "
    raise DataError(
        f"{missing}Dataset '{name}' not found: expected {looked}. To get it: {info.how_to_get}"
        f" (into {candidates[0]})."
    )


def load_split(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    *,
    image_size: int | None = None,
    download: bool = False,
    bad_images: str = "skip",
) -> ImageSet:
    """Load one split of a dataset, decoded into memory: images uint8 [N, 3, S, S].

    image_size: side in px to store (None = the dataset's default, see DatasetInfo).
    bad_images: "skip" (leave unreadable image files out, with one warning) or "fail".
    """
    entry = _entry(name)
    opts = _options(entry, image_size, bad_images)
    _check_split(entry, split)
    root = resolve_dir(name, data_dir, download)
    return entry.read(root, split, opts)


def load_protocol(
    name: str,
    protocol: str,
    data_dir: str | Path | None = None,
    *,
    image_size: int | None = None,
    download: bool = False,
    bad_images: str = "skip",
    include_unlabeled: bool = False,
    all_splits: tuple[str, ...] = LABELLED_SPLITS,
) -> tuple[ImageSet, ImageSet]:
    """(fit_set, eval_set) for an evaluation protocol.

    "train-test": fit on train, evaluate on test. "all": fit and evaluate on the labelled
    splits in `all_splits` that exist (train+test, or the only split).
    include_unlabeled adds the "unlabeled" split (STL-10) to the fit set.
    With "all", eval_set shares memory with the start of fit_set (no copy).
    """
    entry = _entry(name)
    check_all_splits(all_splits)
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"unknown protocol '{protocol}': use 'train-test' (fit on train, evaluate on test) "
            "or 'all' (fit and evaluate on train+test)."
        )
    opts = _options(entry, image_size, bad_images)
    if include_unlabeled and "unlabeled" not in entry.info.splits:
        raise DataError(
            f"dataset '{name}' has no unlabeled split, so include_unlabeled cannot be used with "
            f"it (only {_with_split('unlabeled')} have one). Leave it off."
        )
    root = resolve_dir(name, data_dir, download)
    present = entry.available(root) if entry.available else entry.info.splits
    labelled = [s for s in LABELLED_SPLITS if s in present]
    if protocol == "train-test" and labelled != ["train", "test"]:
        where = f" at {root}" if entry.locate is not None else ""
        raise DataError(
            f"dataset '{name}'{where} has a single split ({', '.join(labelled)}), so protocol "
            "'train-test' is not possible: use --protocol all to fit and evaluate on it."
        )
    if protocol == "train-test":
        fit, evaluate = entry.read(root, "train", opts), entry.read(root, "test", opts)
        if include_unlabeled:
            fit = ImageSet.concat([fit, entry.read(root, "unlabeled", opts)])
        return fit, evaluate
    parts = [entry.read(root, s, opts) for s in labelled if s in all_splits]
    if not parts:
        raise DataError(
            f"dataset '{name}' has no {' or '.join(all_splits)} split here; data.all_splits "
            f"must name one of {', '.join(labelled)}."
        )
    evaluate = parts[0] if len(parts) == 1 else ImageSet.concat(parts)
    if not include_unlabeled:
        return evaluate, _view(evaluate, len(evaluate))
    fit = ImageSet.concat([evaluate, entry.read(root, "unlabeled", opts)])
    return fit, _view(fit, len(evaluate), evaluate.name)


def check_all_splits(all_splits: tuple[str, ...]) -> None:
    """ConfigError unless all_splits is a non-empty selection of train and test."""
    if not all_splits or any(s not in LABELLED_SPLITS for s in all_splits):
        raise ConfigError(
            f"data.all_splits must name train and/or test (the splits protocol 'all' joins); "
            f"got {list(all_splits)!r}."
        )


# --------------------------------------------------------------------------- helpers


def _entry(name: str) -> DatasetEntry:
    try:
        return DATASETS.get(name)
    except DeepclustError as exc:
        raise DataError(str(exc)) from None


def _options(entry: DatasetEntry, image_size: int | None, bad_images: str) -> ReadOptions:
    readers.check_bad_images(bad_images)
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ConfigError(f"image_size must be a positive integer or None, got {image_size!r}.")
    return ReadOptions(image_size or entry.info.image_size, bad_images)


def _check_split(entry: DatasetEntry, split: str) -> None:
    if split not in entry.info.splits:
        raise DataError(
            f"dataset '{entry.info.name}' has no split '{split}'; its splits are: "
            f"{', '.join(entry.info.splits)}."
        )


def _with_split(split: str) -> str:
    return ", ".join(n for n in DATASETS.names() if split in DATASETS.get(n).info.splits)


def _view(s: ImageSet, n: int, name: str | None = None) -> ImageSet:
    """The first n images of s as a new ImageSet sharing s's memory."""
    paths = s.paths[:n] if s.paths is not None else None
    return ImageSet(s.images[:n], s.labels[:n], list(s.class_names), paths, name or s.name)


def _download(entry: DatasetEntry, target: Path) -> Path:
    info = entry.info
    if entry.download is None:
        raise DataError(
            f"dataset '{info.name}' cannot be downloaded automatically and was not found in "
            f"{target}. To get it: {info.how_to_get}"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
        entry.download(target)
    except DataError:
        raise
    except Exception as exc:  # network, disk, checksum: all mean "get it by hand"
        raise DataError(
            f"downloading '{info.name}' into {target} failed ({type(exc).__name__}: {exc}). "
            f"Retry with internet access, or get it by hand: {info.how_to_get} (into {target})."
        ) from exc
    found = entry.locate(target) if entry.locate else target
    if found is None:
        raise DataError(
            f"the download of '{info.name}' finished but {target / entry.expected} is missing. "
            f"Delete {target} and try again, or: {info.how_to_get}"
        )
    return found


def _imageset(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    name: str,
    opts: ReadOptions,
    paths: list[str] | None = None,
) -> ImageSet:
    """Wrap arrays (uint8 [N, 3, H, W], int64 [N]) as an ImageSet, resizing if asked."""
    if opts.image_size is not None:
        images = readers.fit_array(images, opts.image_size)
    return ImageSet(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        class_names,
        paths,
        name,
    )


def _first_existing(
    folder: Path, subdirs: tuple[str, ...], markers: tuple[str, ...]
) -> Path | None:
    """The first of folder/sub (sub in subdirs, "" = folder) holding any of markers."""
    for sub in subdirs:
        candidate = folder / sub if sub else folder
        if any((candidate / m).exists() for m in markers):
            return candidate
    return None


def _torchvision_download(cls_name: str, **kwargs: object) -> Callable[[Path], None]:
    def download(target: Path) -> None:
        import torchvision.datasets as tvd

        getattr(tvd, cls_name)(root=str(target), download=True, **kwargs)

    return download


def _decoded_imageset(
    root: Path,
    rel_paths: list[str],
    labels: list[int],
    class_names: list[str],
    name: str,
    opts: ReadOptions,
    tag: str,
) -> ImageSet:
    """Decode image files (cached) and keep the labels of the readable ones."""
    if not rel_paths:
        raise DataError(f"no image files for {name} under {root}.")
    if disk_store.on_disk(len(rel_paths), opts.image_size):  # too large for memory
        dec = disk_store.load_image_files(
            root,
            rel_paths,
            opts.image_size,
            opts.bad_images,
            tag,  # type: ignore[arg-type]
        )
    else:
        dec = readers.load_image_files(root, rel_paths, opts.image_size, opts.bad_images, tag)
    if len(dec.kept) == 0:
        raise DataError(
            f"none of the {len(rel_paths)} image files for {name} under {root} could be read; "
            "see the warning above for the reasons."
        )
    kept = dec.kept.tolist()
    base = str(root)
    return ImageSet(
        torch.from_numpy(dec.images),
        torch.tensor([labels[i] for i in kept], dtype=torch.int64),
        class_names,
        [os.path.join(base, rel_paths[i]) for i in kept],
        name,
        list(dec.skipped),
    )


# --------------------------------------------------------------------------- CIFAR

_CIFAR_HOW = (
    "pass --download (needs internet), or download {archive} from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and extract it so that the folder {folder} "
    "sits in the data folder"
)


def _locate_cifar10(folder: Path) -> Path | None:
    markers = ("batches.meta", "data_batch_1", "test_batch")
    return _first_existing(folder, ("cifar-10-batches-py", ""), markers)


def _read_cifar10(root: Path, split: str, opts: ReadOptions) -> ImageSet:
    names = readers.names_field(
        readers.read_pickle(root / "batches.meta"), "label_names", root / "batches.meta"
    )
    if split == "train":
        files = [
            root / f"data_batch_{i}" for i in range(1, 6) if (root / f"data_batch_{i}").exists()
        ]
        if not files:
            raise DataError(
                f"no training batches (data_batch_1 .. data_batch_5) in {root}: the archive is "
                "incompletely extracted. Extract cifar-10-python.tar.gz again."
            )
        if len(files) < 5:
            warnings.warn(
                f"only {len(files)} of the 5 CIFAR-10 training batches are in {root}; loading "
                "those. Extract cifar-10-python.tar.gz again for the full training set.",
                stacklevel=3,
            )
    else:
        files = [root / "test_batch"]
    batches = [readers.cifar_batch(f, "labels") for f in files]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    return _imageset(images, labels, names, f"cifar10/{split}", opts)


def _locate_cifar100(folder: Path) -> Path | None:
    return _first_existing(folder, ("cifar-100-python", ""), ("meta", "train", "test"))


def _cifar100_reader(coarse: bool) -> Callable[[Path, str, ReadOptions], ImageSet]:
    kind = "coarse" if coarse else "fine"
    dataset = "cifar20" if coarse else "cifar100"

    def read(root: Path, split: str, opts: ReadOptions) -> ImageSet:
        meta = readers.read_pickle(root / "meta")
        names = readers.names_field(meta, f"{kind}_label_names", root / "meta")
        images, labels = readers.cifar_batch(root / split, f"{kind}_labels")
        return _imageset(images, labels, names, f"{dataset}/{split}", opts)

    return read


# --------------------------------------------------------------------------- STL-10


def _locate_stl10(folder: Path) -> Path | None:
    markers = ("train_X.bin", "test_X.bin", "unlabeled_X.bin")
    return _first_existing(folder, ("stl10_binary", ""), markers)


def _read_stl10(root: Path, split: str, opts: ReadOptions) -> ImageSet:
    x_path = root / f"{split}_X.bin"
    if not x_path.exists():
        raise DataError(
            f"missing {x_path}: the STL-10 archive is incompletely extracted. Extract "
            "stl10_binary.tar.gz again (or pass --download)."
        )
    images = readers.read_stl10_images(x_path)
    if split == "unlabeled":
        labels = np.full(len(images), -1, dtype=np.int64)
        names: list[str] = []
    else:
        labels = readers.read_stl10_labels(root / f"{split}_y.bin", len(images))
        names_file = root / "class_names.txt"
        if not names_file.exists():
            raise DataError(f"missing {names_file}: extract stl10_binary.tar.gz again.")
        names = [s.strip() for s in names_file.read_text().splitlines() if s.strip()]
    return _imageset(images, labels, names, f"stl10/{split}", opts)


# --------------------------------------------------------------------------- Tiny ImageNet

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _locate_tiny(folder: Path) -> Path | None:
    return _first_existing(folder, ("tiny-imagenet-200", ""), ("wnids.txt",))


def _download_tiny(target: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(TINY_IMAGENET_URL, download_root=str(target))


def _read_tiny(root: Path, split: str, opts: ReadOptions) -> ImageSet:
    wnids = sorted({w.strip() for w in (root / "wnids.txt").read_text().splitlines() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    words: dict[str, str] = {}
    if (root / "words.txt").exists():
        for line in (root / "words.txt").read_text(errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            if wnid in index:
                words[wnid] = text.split(",")[0].strip()
    names = [words.get(w, w) for w in wnids]
    rels: list[str] = []
    labels: list[int] = []
    if split == "train":
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise DataError(
                    f"missing {folder}: Tiny ImageNet's train/<wnid>/images/ folders are "
                    "incomplete. Extract tiny-imagenet-200.zip again."
                )
            files = readers.images_in(folder)
            rels += [f"train/{w}/images/{f}" for f in files]
            labels += [index[w]] * len(files)
    else:
        ann = root / "val" / "val_annotations.txt"
        if not ann.exists():
            raise DataError(
                f"missing {ann} (the labels of the test split = Tiny ImageNet's val/ folder). "
                "Extract tiny-imagenet-200.zip again."
            )
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise DataError(
                    f"{ann} line {n} is not '<file>\\t<wnid>...' with a wnid from wnids.txt: "
                    f"{line[:80]!r}. Extract tiny-imagenet-200.zip again."
                )
            rels.append(f"val/images/{parts[0]}")
            labels.append(index[parts[1]])
        missing = [r for r in rels if not (root / r).exists()]
        if missing:
            raise DataError(
                f"{len(missing)} file(s) listed in {ann} are missing, e.g. {root / missing[0]}. "
                "Extract tiny-imagenet-200.zip again."
            )
    name = f"tiny_imagenet/{split}"
    return _decoded_imageset(root, rels, labels, names, name, opts, f"tiny_imagenet-{split}")


# --------------------------------------------------------------------------- ImageNet subsets

_IMAGENET_HOW = (
    "ImageNet cannot be downloaded automatically: get ILSVRC2012 from https://image-net.org "
    "(free account) and lay it out as train/<wnid>/*.JPEG (and val/<wnid>/*.JPEG for the test "
    "split)"
)


def _locate_imagenet(folder: Path) -> Path | None:
    for sub in ("", "ILSVRC/Data/CLS-LOC"):
        candidate = folder / sub if sub else folder
        if (candidate / "train").is_dir():
            return candidate
    return None


def _imagenet_available(root: Path) -> tuple[str, ...]:
    return ("train", "test") if (root / "val").is_dir() else ("train",)


def _imagenet_reader(subset: str) -> Callable[[Path, str, ReadOptions], ImageSet]:
    synsets = SUBSETS[subset]

    def read(root: Path, split: str, opts: ReadOptions) -> ImageSet:
        base = root / ("train" if split == "train" else "val")
        if not base.is_dir():
            raise DataError(
                f"no {base} folder: the test split of {subset} is ImageNet's validation set as "
                "val/<wnid>/*.JPEG. Sort the validation images into class folders, or use "
                "--protocol all (which then uses the train folders only)."
            )
        missing = [w for w, _ in synsets if not (base / w).is_dir()]
        if missing:
            raise DataError(
                f"{base} lacks the class folder(s) {', '.join(missing)} needed by {subset} "
                f"(expected {base / missing[0]}/*.JPEG). Point {option('data.data_dir')} at an ImageNet "
                "folder with class-sorted train/ (and val/) folders."
            )
        rels: list[str] = []
        labels: list[int] = []
        for label, (wnid, _) in enumerate(synsets):
            files = readers.images_in(base / wnid)
            rels += [f"{base.name}/{wnid}/{f}" for f in files]
            labels += [label] * len(files)
        if not rels:
            raise DataError(
                f"the {subset} class folders under {base} hold no images (looked for "
                f"{readers.extensions_text()}, any case)."
            )
        names = [n for _, n in synsets]
        tag = f"{subset}-{split}"
        return _decoded_imageset(root, rels, labels, names, f"{subset}/{split}", opts, tag)

    return read


# --------------------------------------------------------------------------- image folders


def _folder_splits(root: Path) -> dict[str, Path]:
    """split -> folder: root/train and root/test (or root/val) if present, else root itself."""
    if (root / "train").is_dir():
        splits = {"train": root / "train"}
        for alt in ("test", "val"):
            if (root / alt).is_dir():
                splits["test"] = root / alt
                break
        return splits
    return {"train": root}


def _folder_available(root: Path) -> tuple[str, ...]:
    """The splits of an image folder; DataError when it holds no image at all."""
    splits = _folder_splits(root)
    if not any(_holds_an_image(folder) for folder in splits.values()):
        raise _no_images(root)
    return tuple(splits)


def _holds_an_image(folder: Path) -> bool:
    """Whether any image file lies in folder or below it (stops at the first; each real
    folder once, so link loops end)."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if real not in seen else []
        seen.add(real)
        if any(readers.is_image_file(f) for f in filenames):
            return True
    return False


def _list_folder(folder: Path) -> tuple[dict[str, list[str]], list[str]]:
    """(class name -> its images, found recursively; loose images directly in folder).

    Paths are posix strings relative to folder.
    """
    per_class = {
        c: [f"{c}/{f}" for f in readers.images_in(folder / c, recursive=True)]
        for c in readers.class_folders(folder)
    }
    return {c: f for c, f in per_class.items() if f}, readers.images_in(folder)


def _no_images(folder: Path) -> DataError:
    return DataError(
        f"no images found in {folder.resolve()}: looked for files ending in {readers.extensions_text()} "
        "(any case), directly inside it or in class sub-folders. Put the images there, or point "
        f"{option('data.data_dir')} at the folder that holds them."
    )


def _read_imagefolder(root: Path, split: str, opts: ReadOptions) -> ImageSet:
    splits = _folder_splits(root)
    if split not in splits:
        raise DataError(
            f"{root} has no {split}/ folder (nor val/), so it has no {split} split: use "
            "--protocol all, or add a test/ folder next to train/."
        )
    listings = {s: _list_folder(f) for s, f in splits.items()}
    classes = sorted({c for per_class, _ in listings.values() for c in per_class})
    per_class, loose = listings[split]
    folder = splits[split]
    if per_class:
        if loose:
            warnings.warn(
                f"ignoring {len(loose)} image(s) directly in {folder} (e.g. {loose[0]}): "
                "next to class folders, images must sit inside a class folder.",
                stacklevel=3,
            )
        label_of = {c: i for i, c in enumerate(classes)}
        files = [f for c in sorted(per_class) for f in per_class[c]]
        labels = [label_of[c] for c in sorted(per_class) for _ in per_class[c]]
        names = classes
    elif loose:
        files, labels, names = loose, [-1] * len(loose), []
    else:
        raise _no_images(folder)
    prefix = "" if folder == root else f"{folder.name}/"
    rels = [prefix + f for f in files]
    name = f"{root.name}/{split}"
    return _decoded_imageset(root, rels, labels, names, name, opts, f"imagefolder-{name}")


# --------------------------------------------------------------------------- photos

# Photos are stored at the typical (median) shorter side of the collection, at most this:
# the input size of the default frozen encoders, which resize to it anyway. Small images
# (e.g. 32 px CIFAR files) stay at their size instead of being upsampled twice.
PHOTO_MAX_SIDE = 224


def photo_files(root: Path, labelled: bool = False) -> tuple[list[str], list[int], list[str]]:
    """(relative paths, labels, class names) of every image under root, recursively.

    Unlabelled (label -1) unless `labelled`: then each first-level sub-folder is a class
    (scored, never used to fit), and every image must sit in one of at least two.
    """
    files = readers.images_in(root, recursive=True)
    if not files:
        raise _no_images(root)
    if not labelled:
        return files, [-1] * len(files), []
    tops = [f.split("/", 1)[0] if "/" in f else None for f in files]
    classes = sorted({t for t in tops if t is not None})
    if None in tops or len(classes) < 2:
        loose = sum(t is None for t in tops)
        raise DataError(
            f"--labels-from-folders: '{root}' has {len(classes)} sub-folder(s) and "
            f"{loose} image(s) directly inside it; classes need every image in one of at "
            "least two sub-folders. Move the loose images, or leave the flag off."
        )
    label_of = {c: i for i, c in enumerate(classes)}
    return files, [label_of[t] for t in tops], classes  # type: ignore[index]


def photo_store_side(root: Path, files: list[str]) -> int:
    """The stored side of a photo collection: its median shorter side, at most PHOTO_MAX_SIDE."""
    side = readers.typical_shorter_side([str(root / f) for f in files])
    return min(side or PHOTO_MAX_SIDE, PHOTO_MAX_SIDE)


def _photo_reader(labelled: bool) -> Callable[[Path, str, ReadOptions], ImageSet]:
    def read(root: Path, split: str, opts: ReadOptions) -> ImageSet:
        files, labels, names = photo_files(root, labelled)
        if opts.image_size is None:
            opts = ReadOptions(photo_store_side(root, files), opts.bad_images)
        key = f"photos-{root.name}" + ("-labelled" if labelled else "")
        return _decoded_imageset(root, files, labels, names, root.name, opts, key)

    return read


# --------------------------------------------------------------------------- digits


def _read_digits(root: Path, split: str, opts: ReadOptions) -> ImageSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)  # [N, 8, 8] in 0..16
    gray = np.clip(np.rint(values * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.repeat(gray[:, None], 3, axis=1)
    names = [str(n) for n in bunch.target_names]
    return _imageset(images, bunch.target, names, "digits/train", opts)


# --------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_FASHION_PREFIX = {"train": "train", "test": "t10k"}


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _locate_fashion(folder: Path) -> Path | None:
    for sub in (folder, folder / "FashionMNIST" / "raw", folder / "raw"):
        if any(_idx_file(sub, f"{p}-images-idx3-ubyte") for p in ("train", "t10k")):
            return sub
    return None


def _fashion_available(root: Path) -> tuple[str, ...]:
    """The splits whose images are under root: a folder with only the t10k files is the
    test split alone (protocol `all` then fits on those 10,000 images)."""
    return tuple(s for s, p in _FASHION_PREFIX.items() if _idx_file(root, f"{p}-images-idx3-ubyte"))


def _read_fashion(root: Path, split: str, opts: ReadOptions) -> ImageSet:
    prefix = _FASHION_PREFIX[split]
    found = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        path = _idx_file(root, stem)
        if path is None:
            raise DataError(
                f"missing {root / stem}(.gz) for the Fashion-MNIST {split} split. Pass "
                "--download (needs internet) or install the Debian package dataset-fashion-mnist."
            )
        found.append(path)
    gray = readers.read_idx(found[0], readers.IDX_IMAGES_MAGIC)
    labels = readers.read_idx(found[1], readers.IDX_LABELS_MAGIC)
    if gray.ndim != 3 or labels.ndim != 1 or len(gray) != len(labels):
        raise DataError(
            f"{found[0]} ({gray.shape}) and {found[1]} ({labels.shape}) do not match: expected "
            "images [N, 28, 28] and labels [N]. Download the files again."
        )
    images = np.repeat(gray[:, None], 3, axis=1)
    return _imageset(images, labels, list(FASHION_MNIST_CLASSES), f"fashion_mnist/{split}", opts)


# --------------------------------------------------------------------------- registrations


def _register(entry: DatasetEntry) -> None:
    DATASETS.register(entry.info.name)(entry)


_register(
    DatasetEntry(
        DatasetInfo(
            "cifar10",
            "CIFAR-10: 60,000 32x32 colour images, 10 classes (50,000 train / 10,000 test)",
            ("train", "test"),
            10,
            32,
            "cifar10",
            _CIFAR_HOW.format(archive="cifar-10-python.tar.gz", folder="cifar-10-batches-py/"),
        ),
        _read_cifar10,
        _locate_cifar10,
        "cifar-10-batches-py/data_batch_1",
        download=_torchvision_download("CIFAR10", train=True),
    )
)
for _name, _coarse, _n, _what in (
    ("cifar100", False, 100, "100 fine classes"),
    ("cifar20", True, 20, "the 20 coarse superclasses of CIFAR-100"),
):
    _register(
        DatasetEntry(
            DatasetInfo(
                _name,
                f"CIFAR-100 labelled with {_what}: 60,000 32x32 images (50,000 train / 10,000 test)",
                ("train", "test"),
                _n,
                32,
                "cifar100",
                _CIFAR_HOW.format(archive="cifar-100-python.tar.gz", folder="cifar-100-python/"),
            ),
            _cifar100_reader(_coarse),
            _locate_cifar100,
            "cifar-100-python/train",
            download=_torchvision_download("CIFAR100", train=True),
        )
    )
_register(
    DatasetEntry(
        DatasetInfo(
            "stl10",
            "STL-10: 96x96 images, 10 classes (5,000 train / 8,000 test / 100,000 unlabeled)",
            ("train", "test", "unlabeled"),
            10,
            96,
            "stl10",
            "pass --download (needs internet), or download stl10_binary.tar.gz from "
            "https://cs.stanford.edu/~acoates/stl10/ and extract it so that the folder "
            "stl10_binary/ sits in the data folder",
        ),
        _read_stl10,
        _locate_stl10,
        "stl10_binary/train_X.bin",
        download=_torchvision_download("STL10", split="train"),
    )
)
_register(
    DatasetEntry(
        DatasetInfo(
            "tiny_imagenet",
            "Tiny ImageNet: 64x64 images, 200 classes (100,000 train / 10,000 val as test)",
            ("train", "test"),
            200,
            64,
            "tiny_imagenet",
            f"pass --download (needs internet), or download {TINY_IMAGENET_URL} and unzip it so "
            "that the folder tiny-imagenet-200/ sits in the data folder",
        ),
        _read_tiny,
        _locate_tiny,
        "tiny-imagenet-200/wnids.txt",
        download=_download_tiny,
    )
)
for _name, _title in (("imagenet10", "ImageNet-10"), ("imagenet_dogs", "ImageNet-Dogs")):
    _register(
        DatasetEntry(
            DatasetInfo(
                _name,
                f"{_title}: the {len(SUBSETS[_name])} ImageNet classes of the DAC / Contrastive "
                "Clustering benchmark, read from a local ImageNet (train; val as test)",
                ("train", "test"),
                len(SUBSETS[_name]),
                96,
                "imagenet",
                _IMAGENET_HOW,
            ),
            _imagenet_reader(_name),
            _locate_imagenet,
            f"train/{SUBSETS[_name][0][0]}/",
            available=_imagenet_available,
        )
    )
_register(
    DatasetEntry(
        DatasetInfo(
            "imagefolder",
            "Your own images: class folders (labels = sorted folder names), optionally under "
            "train/ and test/, or a flat folder of unlabelled images",
            ("train", "test"),
            None,
            None,
            "imagefolder",
            f"point {option('data.data_dir')} at a folder of class folders (or of train/ and test/ folders, or "
            f"of images); image files end in {readers.extensions_text()}",
        ),
        _read_imagefolder,
        lambda folder: folder,
        "",
        available=_folder_available,
    )
)
for _name, _labelled in (("photos", False), ("photo_classes", True)):
    _register(
        DatasetEntry(
            DatasetInfo(
                _name,
                "A folder of photos, searched recursively, any sizes and modes (resized: "
                f"shorter side to the median shorter side, at most {PHOTO_MAX_SIDE} px, centre "
                "crop); "
                + (
                    "its first-level folders are classes, scored only (cluster "
                    "--labels-from-folders)"
                    if _labelled
                    else "unlabelled: sub-folders are just albums"
                ),
                ("train",),
                None,
                None,
                "photos",
                f"point {option('data.data_dir')} at a folder of images "
                f"({readers.extensions_text()})",
            ),
            _photo_reader(_labelled),
            lambda folder: folder,
            "",
        )
    )
_register(
    DatasetEntry(
        DatasetInfo(
            "digits",
            "scikit-learn's digits: 1,797 8x8 grayscale images of handwritten digits, 10 classes",
            ("train",),
            10,
            8,
            "digits",
            "nothing to do: it ships with scikit-learn",
        ),
        _read_digits,
        None,
    )
)
_register(
    DatasetEntry(
        DatasetInfo(
            "fashion_mnist",
            "Fashion-MNIST: 28x28 grayscale clothing images, 10 classes (60,000 train / "
            "10,000 test)",
            ("train", "test"),
            10,
            28,
            "fashion-mnist",
            "pass --download (needs internet), install the Debian package dataset-fashion-mnist, "
            "or place the IDX files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz in the data folder",
        ),
        _read_fashion,
        _locate_fashion,
        "train-images-idx3-ubyte.gz",
        download=_torchvision_download("FashionMNIST", train=True),
        available=_fashion_available,
        extra_dirs=("/usr/share/datasets/fashion-mnist",),
    )
)
