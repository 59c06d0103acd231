"""Memory sizes written the way KenLM's ``lmplz -S`` takes them: ``2G``, ``512M``, ``1.5T``, ``80%``.

A spec's ``memory_mb`` settings accept either a plain integer (megabytes, as before) or such a string::

    >>> memory_mb("ngram.memory_mb", 2048), memory_mb("ngram.memory_mb", "2G"), memory_mb("x", "1.5G")
    (2048, 2048, 1536)

Units are binary, as lmplz's (``K`` = 1024 bytes, ``M`` = 1024 K, ...), case-insensitive, with an optional
trailing ``B``; a bare number in a string is megabytes.  A percentage is of this machine's physical memory
(``os.sysconf``), so it is resolved where the spec is read, like lmplz resolves it where it runs.  The result
is whole megabytes, rounded down.
"""

from __future__ import annotations

import os
import re
from typing import Annotated

from lmpipe.pipelines.spec_parser import fail
from lmpipe.pipelines.spec_schema import SchemaHint

#: The string forms (JSON Schema ``pattern`` of the spec schema too): a number, then a unit or ``%``.
MEMORY_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([kKmMgGtTpP][bB]?|[bB]|%)?\s*$"
_MEMORY = re.compile(MEMORY_PATTERN)
_SHIFT = {"b": -20, "k": -10, "m": 0, "g": 10, "t": 20, "p": 30}  # to megabytes, as powers of two
#: The annotation of a ``memory_mb`` spec field (the dataclass holds the resolved integer after ``__post_init__``).
MemoryMB = Annotated[int | str, SchemaHint({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": MEMORY_PATTERN}]})]
ALLOWED = "megabytes as an integer, or a size such as 2G, 512M, 1.5T or 80% (of physical memory)"


def physical_memory_bytes() -> int:
    """This machine's physical memory (what lmplz's ``-S 80%`` is a fraction of)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_mb(path: str, value: int | str) -> int:
    """``value`` (an integer of MB or a size string) as whole megabytes; fails naming ``path``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _MEMORY.match(value) if isinstance(value, str) else None
    if match is None:
        fail(path, value, ALLOWED)
    number = float(value.strip().rstrip("%bBkKmMgGtTpP").strip())
    unit = (match.group(2) or "m").lower()
    if unit == "%":
        if not 0 < number <= 100:
            fail(path, value, "a percentage in (0 .. 100]")
        return int(physical_memory_bytes() * number / 100) >> 20
    return int(number * 2.0 ** _SHIFT[unit[0]])
