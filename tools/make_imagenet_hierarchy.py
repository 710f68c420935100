"""Write src/deepclust/cluster/imagenet_hierarchy.tsv: the ImageNet-1k classes and all their
WordNet 3.0 hypernyms, so cluster naming (cluster/naming.py) needs no WordNet at run time.

    python tools/make_imagenet_hierarchy.py [--wordnet /usr/share/wordnet] [--out FILE]

Inputs: WordNet 3.0's data.noun (hypernym pointers '@' and '@i') and cntlist.rev (how often
each word sense is tagged in the Princeton semantic concordance), as Debian's wordnet-base
installs them, and timm's imagenet_synsets.txt (the 1000 wnids in classifier output order;
wnid 'n02084071' is the data.noun offset 02084071). The WordNet licence lets the derived file
be redistributed with its copyright notice, which the file's header carries.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from deepclust.data.vocabulary import Synset, read_synsets

OUT = (
    Path(__file__).resolve().parents[1] / "src" / "deepclust" / "cluster" / "imagenet_hierarchy.tsv"
)


def timm_classes() -> list[str]:
    """The 1000 ImageNet-1k wnids in the order of a timm classifier's outputs."""
    import timm

    path = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    wnids = path.read_text().split()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000, path
    return wnids


def sense_counts(path: Path) -> dict[str, int]:
    """cntlist.rev: sense key -> times tagged ('dog%1:05:00:: 1 42' -> 42)."""
    counts: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, count = line.split(" ")
        counts[key] = int(count)
    return counts


def tagged(synset: Synset, counts: dict[str, int]) -> int:
    """How often the synset's words are tagged in that sense (noun sense keys, wndb(5))."""
    keys = (f"{w.lower()}%1:{synset.lex_filenum}:{lex:02d}::" for w, lex in synset.words)
    return sum(counts.get(k, 0) for k in keys)


def closure(classes: list[str], synsets: dict[str, Synset]) -> list[str]:
    """The classes' offsets first (in order), then every hypernym reachable from them."""
    order = [c[1:] for c in classes]
    seen = set(order)
    for offset in order:  # grows while it is walked: breadth first
        for up in synsets[offset].hypernyms:
            if up not in seen:
                seen.add(up)
                order.append(up)
    return order


def licence_header(data_noun: Path) -> list[str]:
    """data.noun's licence lines (its copyright notice must travel with derived copies)."""
    lines = []
    with data_noun.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith("  "):
                break
            number_text = line.strip().split(" ", 1)  # '  14 WordNet 3.0 Copyright ...'
            lines.append(f"# {number_text[1].strip() if len(number_text) > 1 else ''}".rstrip())
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    synsets = {s.offset: s for s in read_synsets(args.wordnet / "data.noun")}
    counts = sense_counts(args.wordnet / "cntlist.rev")
    classes = timm_classes()
    children: dict[str, int] = defaultdict(int)
    rows = []
    for offset in closure(classes, synsets):
        s = synsets[offset]
        parents = " ".join(f"n{p}" for p in s.hypernyms)
        name = s.words[0][0].replace("_", " ")
        rows.append(f"n{offset}\t{name}\t{tagged(s, counts)}\t{parents}")
        for p in s.hypernyms:
            children[p] += 1
    header = [
        "# ImageNet-1k classes and their WordNet 3.0 hypernyms, derived from WordNet 3.0 by",
        "# tools/make_imagenet_hierarchy.py (data.noun, cntlist.rev; class order: timm's",
        "# imagenet_synsets.txt). Redistributed under the WordNet 3.0 licence below. Do not edit.",
        "# columns: wnid, name (first word), times tagged in SemCor (cntlist.rev), hypernym wnids",
        "# the first 1000 rows are the classes, in the order of an ImageNet-1k classifier's outputs",
        "#",
        *licence_header(args.wordnet / "data.noun"),
    ]
    args.out.write_text("\n".join([*header, *rows]) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(classes)} classes, {len(rows)} synsets")


if __name__ == "__main__":
    main()
