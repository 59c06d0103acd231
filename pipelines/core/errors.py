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


class UserError(Exception):
    """A mistake the user can fix; the CLI prints its message as one line and exits 2."""


class MissingError(UserError, FileNotFoundError):
    """A file, run directory or upstream stage the user's spec or command names does not exist (yet); the
    message names it and what to run or set."""
