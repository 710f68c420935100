"""RUN/clusters/<id>[-<name>]/: a run's clusters as folders of links to (or copies of) its
photos; `deepclust export RUN` completes an interrupted export or redoes it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from deepclust.errors import DataError
from deepclust.practice.folder import read_predictions


def export_clusters(run_dir: str | Path, copy: bool = False, redo: bool = False) -> Path:
    """RUN/clusters/<id>[-<name>]/: one folder per cluster holding symbolic links to its photos
    (copies with copy=True). File names are kept (shortened with a hash when too long for the
    file system); a clash gets the photo's sub-folder path.

    An existing export is completed: entries that are already right are kept, missing or
    wrong ones (a copy cut short, a link where a copy is asked for) are written again;
    redo=True removes it first. An entry is written under a temporary name and renamed, so
    a kill never leaves half a file.
    """
    run_dir = Path(run_dir)
    target = run_dir / "clusters"
    plan = export_plan(run_dir, target)
    if redo and (target.exists() or target.is_symlink()):
        _remove_export(target)
    for dest, source in plan:
        _refuse_linked_folder(dest.parent, target)
        if _entry_is_right(dest, source, copy):
            continue
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _write_entry(dest, source, copy)
        except OSError as e:
            how = f"deepclust export {run_dir}{' --copy' if copy else ''}"
            raise DataError(
                f"the export stopped at '{dest}' ({e.strerror or e}): fix that, then finish "
                f"it with `{how}` (entries already written are kept)."
            ) from None
    return target


def export_plan(run_dir: Path, target: Path) -> list[tuple[Path, Path]]:
    """(destination, absolute source) of every photo in the run's predictions, the same
    whatever is on disk (so that an interrupted export can be completed)."""
    from deepclust.api import read_cluster_names

    paths, clusters = read_predictions(run_dir / "predictions.csv")
    if not paths or not paths[0]:
        raise DataError(f"the predictions of '{run_dir}' name no image files to export.")
    k = max(clusters) + 1
    names = read_cluster_names(run_dir, k)
    width = len(str(k - 1))
    folders = {c: target / _folder_name(c, width, names.get(c, "")) for c in set(clusters)}
    taken: dict[int, set[str]] = {c: set() for c in folders}
    plan = []
    for path, c in zip(paths, clusters, strict=True):
        name = _free_name(taken[c], Path(path))
        taken[c].add(name)
        plan.append((folders[c] / name, Path(os.path.abspath(path))))
    return plan


def _refuse_linked_folder(folder: Path, target: Path) -> None:
    """The export writes only into real folders under RUN/clusters: a link there (to a folder
    of the user's) would have the export write, and replace files, outside the run."""
    for path in (target, folder):
        if path.is_symlink():
            raise DataError(
                f"'{path}' is a symbolic link, and an export never writes through links: "
                "remove the link (its target is kept) and export again."
            )


def _remove_export(target: Path) -> None:
    """Remove an export folder deepclust wrote: links are removed, never followed."""
    if target.is_symlink() or not target.is_dir():
        raise DataError(f"'{target}' is not an export folder: remove it yourself first.")
    shutil.rmtree(target)


def _entry_is_right(dest: Path, source: Path, copy: bool) -> bool:
    """dest is already the link to source (or, with copy, a file of source's size)."""
    if not copy:
        return dest.is_symlink() and os.readlink(dest) == str(source)
    if dest.is_symlink() or not dest.is_file():
        return False
    return dest.stat().st_size == source.stat().st_size


def _write_entry(dest: Path, source: Path, copy: bool) -> None:
    tmp = dest.with_name(f".{dest.name[:200]}.tmp-{os.getpid()}")
    try:
        if copy:
            shutil.copy2(source, tmp)
        else:
            os.symlink(source, tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def _folder_name(cluster: int, width: int, name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name.split(",")[0]).strip("-").lower()
    return f"{cluster:0{width}d}" + (f"-{slug}" if slug else "")


NAME_MAX = 255  # bytes in a file name on the common file systems (ext4, APFS, NTFS in UTF-16)


def short_name(name: str, source: Path, limit: int = NAME_MAX) -> str:
    """`name` when it fits `limit` bytes; else its stem cut at a character boundary, '-', 8 hex
    of a hash of the source's full path and the name (unique per photo) and the extension."""
    if len(name.encode()) <= limit:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix.encode()) <= 16 else ""
    tag = "-" + hashlib.blake2b(f"{source}|{name}".encode(), digest_size=4).hexdigest()
    room = limit - len(tag.encode()) - len(suffix.encode())
    stem = name[: len(name) - len(suffix)].encode()[:room].decode(errors="ignore")
    return stem + tag + suffix


def _free_name(taken: set[str], source: Path) -> str:
    """The source's file name, or with its parent folders prefixed when that is taken."""
    name = short_name(source.name, source)
    if name not in taken:
        return name
    tagged = short_name("_".join([*source.parent.parts[-2:], source.name]).lstrip("/_"), source)
    name, i = tagged, 1
    while name in taken:
        name, i = short_name(f"{Path(tagged).stem}-{i}{source.suffix}", source), i + 1
    return name
