"""The error contract every floor shares: a mistake the user can fix, versus a bug.

    >>> raise SpecError("ngram.order: bad value 9; allowed: a number in [1 .. 6]")   # a UserError
    lmpipe: error: ngram.order: bad value 9; allowed: a number in [1 .. 6]          # exit status 2

Each kind of user mistake keeps its own class where it is raised (``SpecError`` in the spec, ``InputError``
in ingest, ``DatasetError`` in datasets ...); every one subclasses :class:`UserError`, so the CLI catches
them once.  Anything that is not a ``UserError`` is a bug and may trace back.  ``cluster/`` imports no
project code: its user errors (``SubmitError``, ``StorageError``, ``ResourceError``) live there and the CLI
names them beside ``UserError``.
"""

from __future__ import annotations

import reprlib


class UserError(Exception):
    """A mistake the user can fix; the CLI prints its message as one line and exits 2."""


class MissingError(UserError, FileNotFoundError):
    """A file, run directory or upstream stage the user's spec or command names does not exist (yet); the
    message names it and what to run or set."""


#: Characters of a user's value an error message quotes at most.
MAX_QUOTED = 120


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()  # keyword arguments need Python 3.12
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 3, 80, 80, 40
    r.maxtuple = r.maxlist = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 6
    return r


_REPR = _bounded_repr()


def quoted(value: object, limit: int = MAX_QUOTED) -> str:
    """``repr(value)`` bounded in depth, items and characters, for error messages: a 100 MB string or a deeply
    nested value from a spec is quoted by its start (``'xxx...xxx'``), never formatted whole."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
