"""The one text normaliser: what a line of text becomes before tokenization, for the corpus and for any
later text (a generation prompt, new text to score), so the same characters always give the same tokens.

Order matters and is fixed: NFKC first, then lowercase.  ``ℌ`` (U+210C) is NFKC ``H`` and then ``h``;
lowercasing first would leave ``ℌ`` (it has no lowercase) and NFKC would then give ``H``.  Both steps run in
Arrow compute (utf8proc), so a prompt is normalised by exactly the code that normalised the corpus.

    >>> normalize_lines(pa.array(["ℌello"]), nfkc=True, lowercase=True).to_pylist()
    ['hello']
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def normalize_lines(text: pa.StringArray, *, nfkc: bool, lowercase: bool) -> pa.StringArray:
    """``text`` after Unicode NFKC normalisation (if ``nfkc``) and then lowercasing (if ``lowercase``)."""
    if nfkc:
        text = pc.utf8_normalize(text, "NFKC")
    if lowercase:
        text = pc.utf8_lower(text)
    return text


def normalize_line(line: str, *, nfkc: bool, lowercase: bool) -> str:
    """One string through :func:`normalize_lines` (a prompt)."""
    return normalize_lines(pa.array([line], pa.string()), nfkc=nfkc, lowercase=lowercase)[0].as_py()
