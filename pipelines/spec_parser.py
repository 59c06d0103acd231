"""The generic half of the spec: YAML data -> frozen dataclasses, driven by their type hints alone.

Nothing here knows a section of lmpipe's spec (those are in :mod:`lmpipe.pipelines.spec`); everything is
read from the annotations of the dataclasses it is given::

    >>> parse(RunSpec, {"name": "x", "corpus": {"train": ["a.txt"]}}, source="x.yaml")
    >>> anchor_paths(RunSpec, data, Path("specs"))          # relative LocalPath values -> beside the file
    >>> local_paths(spec)                                    # [("corpus.train[0]", "/abs/a.txt"), ...]
    >>> settings_dict(spec.sgns, fingerprint=True)           # without the Runtime-marked fields

Two markers on a field's type carry meaning beyond conversion (both vanish for :func:`parse`, which reads
the plain type):

``LocalPath`` (:class:`PathRef`)
    the value may name a local file or directory (unless it is a URI, a ``data:`` reference or, for
    :data:`PathRef.names`, a stage name); path anchoring and job submission read these fields.
``Runtime[T]``
    the setting changes where or how fast a stage runs, not what it computes (``workers``, ``threads``,
    ``resources``): it is left out of the stage's fingerprint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import yaml

from lmpipe.pipelines.core.errors import UserError, quoted
from lmpipe.pipelines.core.safe_yaml import safe_load
from lmpipe.pipelines.suggest import did_you_mean


class SpecError(UserError, ValueError):
    """A spec is invalid; the message names file, key path, bad value and allowed values."""


def fail(path: str, value: Any, allowed: str) -> typing.NoReturn:
    raise SpecError(f"{path}: bad value {quoted(value)}; allowed: {allowed}")


def check_range(path: str, value: float | int, lo: float | None = None, hi: float | None = None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{'' if lo is None else lo} .. {'' if hi is None else hi}"
        fail(path, value, f"a number in [{bounds}]")


# --------------------------------------------------------------------------------------------- markers
def is_local_relative(ref: str) -> bool:
    """True for a relative local path (not a URI, not a ``data:`` reference, not absolute)."""
    return not ("://" in ref or ref.startswith("data:") or Path(ref).is_absolute())


@dataclass(frozen=True, slots=True)
class PathRef:
    """Marks a string field that may name a local path; ``names`` are values that mean something else
    (stage names such as ``sgns``)."""

    names: tuple[str, ...] = ()

    def is_local(self, ref: str) -> bool:
        """A local path: not a URI, not a ``data:`` reference, not one of ``names``."""
        return ref not in self.names and not ("://" in ref or ref.startswith("data:"))


#: A string that may be a local path (or a URI / ``data:`` reference): anchored and shipped with a job.
LocalPath = Annotated[str, PathRef()]

_T = TypeVar("_T")


class _RuntimeMark:
    """Marker class of :data:`Runtime` (one instance)."""

    def __repr__(self) -> str:
        return "RUNTIME"


RUNTIME = _RuntimeMark()
#: ``workers: Runtime[int] = 2``: a setting left out of the stage fingerprint (where or how fast, not what).
Runtime = Annotated[_T, RUNTIME]


class _NewMark:
    """Marker class of :data:`New` (one instance)."""

    def __repr__(self) -> str:
        return "NEW"


NEW = _NewMark()
#: ``binary_quantize: New[tuple[int, ...]] = ()``: a setting added after runs were made, left out of the stage
#: fingerprint while it has its default, so existing runs stay up to date (its default is the old behaviour).
New = Annotated[_T, NEW]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _marks(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[X, m...]`` -> ``(X, (m...))``; any other type -> ``(tp, ())``."""
    if get_origin(tp) is Annotated:
        base, *extras = get_args(tp)
        return base, tuple(extras)
    return tp, ()


def _path_ref(tp: Any) -> PathRef | None:
    return next((m for m in _marks(tp)[1] if isinstance(m, PathRef)), None)


def _members(tp: Any) -> tuple[Any, ...]:
    """The types a value of ``tp`` may hold one level down: union arms, tuple items (markers kept)."""
    base, _ = _marks(tp)
    origin = get_origin(base)
    if origin in (typing.Union, types.UnionType):
        return tuple(a for a in get_args(base) if a is not type(None))
    if origin is tuple:
        return (get_args(base)[0],)
    return ()


def local_path_fields(cls: type, prefix: str = "") -> list[str]:
    """Key paths of every :data:`LocalPath`-typed field under ``cls`` (``lm.models[].embeddings`` ...)."""
    out: list[str] = []

    def walk(tp: Any, where: str) -> None:
        if _path_ref(tp) is not None:
            out.append(where)
            return
        base, _ = _marks(tp)
        if dataclasses.is_dataclass(base):
            out.extend(local_path_fields(base, f"{where}."))
        for member in _members(tp):
            walk(member, f"{where}[]" if get_origin(_marks(tp)[0]) is tuple else where)

    for f in dataclasses.fields(cls):
        walk(_hints(cls)[f.name], f"{prefix}{f.name}")
    return out


def _walk_values(tp: Any, value: Any, where: str, visit: typing.Callable[[PathRef, str, str], None]) -> None:
    ref = _path_ref(tp)
    if ref is not None:
        if isinstance(value, str):
            visit(ref, where, value)
        return
    base, _ = _marks(tp)
    if dataclasses.is_dataclass(base) and dataclasses.is_dataclass(value):
        hints = _hints(base)
        for f in dataclasses.fields(base):
            _walk_values(hints[f.name], getattr(value, f.name), f"{where}.{f.name}" if where else f.name, visit)
    elif get_origin(base) is tuple and isinstance(value, tuple):
        for i, item in enumerate(value):
            _walk_values(get_args(base)[0], item, f"{where}[{i}]", visit)
    else:
        for member in _members(tp):
            _walk_values(member, value, where, visit)


def local_paths(spec: Any) -> list[tuple[str, str]]:
    """``(key path, value)`` of every local path a parsed spec names (URIs, ``data:`` and stage names left
    out), e.g. ``("corpus.train[0]", "/data/train.txt")``: what a cluster job must be able to read."""
    out: list[tuple[str, str]] = []
    _walk_values(type(spec), spec, "", lambda ref, where, value: out.append((where, value)) if ref.is_local(value) else None)
    return out


def anchor_paths(cls: type, data: dict[str, Any], base: Path) -> None:
    """Relative paths written in a spec file mean 'beside the spec file', wherever lmpipe is run from: every
    :data:`LocalPath` field of raw spec ``data`` (a mapping for ``cls``) is made absolute under ``base``.

    Paths given later with ``--set`` keep their meaning relative to the working directory."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in data:
            data[f.name] = _anchor(hints[f.name], data[f.name], base)


def _anchor(tp: Any, value: Any, base: Path) -> Any:
    ref = _path_ref(tp)
    if ref is not None:
        return str(base / value) if isinstance(value, str) and ref.is_local(value) and is_local_relative(value) else value
    inner, _ = _marks(tp)
    if dataclasses.is_dataclass(inner):
        if isinstance(value, dict):
            anchor_paths(inner, value, base)
        return value
    if get_origin(inner) is tuple:
        (item,) = get_args(inner)[:1]
        if isinstance(value, str) and _path_ref(item) is not None:
            value = [value]  # a single corpus entry is a one-item list
        return [_anchor(item, v, base) for v in value] if isinstance(value, list) else value
    for member in _members(tp):
        value = _anchor(member, value, base)
    return value


# --------------------------------------------------------------------------------------------- plain data
def plain(value: Any) -> Any:
    """Plain YAML-able data: dataclasses become mappings, tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def settings_dict(section: Any, *, fingerprint: bool = False) -> dict[str, Any]:
    """A section as plain data; with ``fingerprint`` the :data:`Runtime` fields, and :data:`New` fields at their
    default, are left out (at any depth)."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            hints = _hints(type(value))
            return {
                f.name: convert(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if not (fingerprint and RUNTIME in _marks(hints[f.name])[1])
                and not (fingerprint and NEW in _marks(hints[f.name])[1] and getattr(value, f.name) == f.default)
            }
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return convert(section)


# --------------------------------------------------------------------------------------------- parsing
def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {[f.name for f in dataclasses.fields(tp)]}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Convert one YAML value to the annotated type, or fail naming path, value and what is allowed."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own error is the precise one
            return _convert(real[0], value, path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except SpecError as exc:
                errors.append(exc)
        fail(path, value, _describe(tp))
    if origin is Literal:
        if value not in get_args(tp):
            guess = did_you_mean(value, [str(a) for a in get_args(tp)]) if isinstance(value, str) else None
            fail(path, value, _describe(tp) + (f"; did you mean {guess!r}?" if guess else ""))
        return value
    if origin is tuple:
        item_type = get_args(tp)[0]
        items = [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value
        if not isinstance(items, list | tuple):
            fail(path, value, _describe(tp))
        return tuple(_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(items))
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            fail(path, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(path, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(path, value, "a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail(path, value, "a string")
        return value
    raise TypeError(f"unsupported spec type {tp!r} at {path}")  # a programming error, not user input


def build(cls: type, data: Any, path: str) -> Any:
    """One dataclass from a raw mapping: unknown keys, missing keys and bad values fail naming the key path."""
    if not isinstance(data, dict):
        fail(path or "<top>", data, _describe(cls))
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            guess = did_you_mean(str(key), names)
            raise SpecError(
                f"{where}: unknown key; {f'did you mean {guess!r}? ' if guess else ''}"
                f"allowed keys{' of ' + path if path else ''}: {sorted(names)}"
            )
    kwargs = {}
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(f"{where}: missing required key ({_describe(hints[f.name])})")
    return cls(**kwargs)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` override (value parsed as YAML) to raw spec data, in place."""
    if "=" not in assignment:
        raise SpecError(f"--set {quoted(assignment)}: expected key.path=value")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError(f"--set {quoted(assignment)}: empty key path")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {quoted(key)}: value {quoted(raw)} is not valid YAML ({exc})") from exc
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[: i + 1])} is {quoted(child)}, not a section")
        node = child
    node[parts[-1]] = value


def parse(cls: type, data: Any, *, source: str = "<spec>", overrides: typing.Sequence[str] = ()) -> Any:
    """Raw YAML data (plus ``--set`` overrides) -> a validated ``cls``; errors name ``source``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec is a YAML mapping, got {type(data).__name__}")
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy of plain data
    try:
        for assignment in overrides:
            apply_override(data, assignment)
        return build(cls, data, "")
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None


def load(cls: type, path: str | Path, *, overrides: typing.Sequence[str] = ()) -> Any:
    """Read a spec file with ``yaml.safe_load``, anchor its relative paths beside it, parse it into ``cls``.
    Names the file in every error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc.strerror or exc})") from exc
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from exc
    if isinstance(data, dict):
        anchor_paths(cls, data, path.parent.resolve())
    return parse(cls, data, source=str(path), overrides=overrides)


def dump(spec: Any) -> str:
    """A parsed spec as YAML, written to the run directory so a run documents itself."""
    return yaml.safe_dump(plain(spec), sort_keys=False)
