"""Noun vocabularies for vision-language clustering: WordNet's data.noun or a plain text file.

WordNet is read directly from its database file (wndb(5)): each data line of data.noun is

    synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt ... | gloss

with w_cnt a two-digit hexadecimal count and p_cnt pointers of four fields each (symbol,
offset, pos, source/target; '@' and '@i' point to hypernyms); licence lines start with two
spaces. A word's underscores stand for spaces. `lemmas="first"` keeps each synset's first word (its usual
name; WordNet 3.0 gives 67,893 unique nouns, SIC's "about 68k"), `"all"` every word.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deepclust.errors import ConfigError

WORDNET_DIRS = (
    "/usr/share/wordnet",  # Debian / Ubuntu: apt-get install wordnet-base
    "/usr/local/share/wordnet",
    "/usr/share/wordnet/dict",
    "/opt/homebrew/share/wordnet",  # macOS: brew install wordnet
    "~/nltk_data/corpora/wordnet",  # nltk.download("wordnet") (unzipped)
)

MISSING_WORDNET = (
    "no WordNet noun database (data.noun) was found (looked in $WNSEARCHDIR and {dirs}). "
    "Install it (Debian/Ubuntu: sudo apt-get install wordnet-base; macOS: brew install wordnet; "
    "or unzip WordNet 3.0's dict/ folder from wordnet.princeton.edu anywhere), then set "
    "params.vocabulary=/path/to/data.noun if it is not in one of those places. Or give your "
    "own nouns: params.vocabulary=/path/to/nouns.txt (a plain text file, one noun a line)."
)


def find_wordnet() -> Path | None:
    """The data.noun of a local WordNet installation, or None."""
    dirs = [os.environ.get("WNSEARCHDIR", ""), *WORDNET_DIRS]
    for d in dirs:
        if d and (Path(d).expanduser() / "data.noun").is_file():
            return Path(d).expanduser() / "data.noun"
    return None


@dataclass(frozen=True)
class Synset:
    """One data.noun line: its offset, lexicographer file, (word, lex_id) pairs, hypernyms."""

    offset: str
    lex_filenum: str
    words: list[tuple[str, int]]
    hypernyms: list[str]  # offsets of '@' and '@i' pointers (nouns)


HYPERNYM_POINTERS = ("@", "@i")


def read_synsets(path: str | Path) -> Iterator[Synset]:
    """The synsets of a WordNet data.noun, in file order (licence header skipped)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if line.startswith("  ") or not line.strip():
                continue  # licence header
            fields = line.split(" ")
            try:
                count = int(fields[3], 16)
                words = [(fields[4 + 2 * j], int(fields[5 + 2 * j], 16)) for j in range(count)]
                at = 4 + 2 * count
                pointers = [fields[at + 1 + 4 * j : at + 5 + 4 * j] for j in range(int(fields[at]))]
            except (IndexError, ValueError) as e:
                raise ConfigError(
                    f"'{path}' line {number} is not a WordNet data line (wndb(5) format)."
                ) from e
            up = [p[1] for p in pointers if p[0] in HYPERNYM_POINTERS and p[2] == "n"]
            yield Synset(fields[0], fields[1], words, up)


def parse_data_noun(path: str | Path, lemmas: Literal["first", "all"] = "first") -> list[str]:
    """WordNet data.noun -> unique nouns in file order (underscores -> spaces)."""
    nouns: dict[str, None] = {}
    for synset in read_synsets(path):
        words = [w for w, _ in synset.words]
        for word in words[:1] if lemmas == "first" else words:
            nouns.setdefault(word.replace("_", " "), None)
    return list(nouns)


def read_noun_file(path: str | Path) -> list[str]:
    """A plain text file, one noun a line ('#' comments and blank lines skipped) -> unique nouns."""
    nouns: dict[str, None] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        word = line.strip()
        if word and not word.startswith("#"):
            nouns.setdefault(word, None)
    return list(nouns)


def load_vocabulary(
    source: str = "wordnet", lemmas: Literal["first", "all"] = "first"
) -> list[str]:
    """'wordnet' (a local installation), a WordNet data.noun path, or a text file of nouns."""
    if source == "wordnet":
        found = find_wordnet()
        if found is None:
            raise ConfigError(MISSING_WORDNET.format(dirs=", ".join(WORDNET_DIRS)))
        nouns = parse_data_noun(found, lemmas)
    else:
        path = Path(source).expanduser()
        if path.is_dir() and (path / "data.noun").is_file():
            path = path / "data.noun"
        if not path.is_file():
            raise ConfigError(
                f"vocabulary '{source}' does not exist. "
                + MISSING_WORDNET.format(dirs=", ".join(WORDNET_DIRS))
            )
        nouns = parse_data_noun(path, lemmas) if path.name == "data.noun" else read_noun_file(path)
    if not nouns:
        raise ConfigError(f"vocabulary '{source}' holds no nouns.")
    return nouns


def vocabulary_hash(nouns: list[str]) -> str:
    """A short stable hash of the nouns and their order (keys the text-embedding cache)."""
    return hashlib.blake2b("\n".join(nouns).encode(), digest_size=12).hexdigest()
