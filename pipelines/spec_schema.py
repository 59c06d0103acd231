"""The JSON Schema of a spec, generated from its dataclasses (``lmpipe schema``), for editors and linters.

Like the parser (:mod:`lmpipe.pipelines.spec_parser`) it reads only the annotations, so the schema cannot
drift from what ``lmpipe validate`` accepts: a section is an object with exactly its fields (unknown keys are
errors there too), a ``Literal`` an enum, a ``tuple[X, ...]`` a list of X (or one X, as the parser takes it),
``X | None`` may be null.  Descriptions come from each field's ``#:`` comment or trailing ``# ...`` comment
and each section's docstring; defaults are the dataclass defaults.  Range checks made in ``__post_init__``
(``order`` in 1..6 ...) are not in the schema: ``lmpipe validate`` reports those.

Point an editor at it, e.g. with the YAML language server's modeline on the first line of a spec::

    # yaml-language-server: $schema=lmpipe-spec.schema.json
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from lmpipe.pipelines.spec_parser import plain

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True, slots=True)
class SchemaHint:
    """A marker on a field type (``Annotated[T, SchemaHint({...})]``): this JSON Schema replaces the derived one
    (e.g. the memory-size strings of ``memory_mb``)."""

    schema: dict[str, Any]


_FIELD_LINE = re.compile(r"^    ([a-z_][a-z0-9_]*): ")


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the comment that documents it in the class source (``#:`` lines above, or ``# ...`` after)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = _FIELD_LINE.match(line)
        if match:
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            text = " ".join([*pending, trailing]).strip()
            if text and not text.startswith("fmt:"):
                docs[match.group(1)] = text
        pending = []
    return docs


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}

    def type_schema(self, tp: Any) -> dict[str, Any]:
        if get_origin(tp) is Annotated:
            base, *marks = get_args(tp)
            hint = next((m for m in marks if isinstance(m, SchemaHint)), None)
            return dict(hint.schema) if hint is not None else self.type_schema(base)
        origin = get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            return {"anyOf": [self.type_schema(a) for a in get_args(tp)]}
        if origin is Literal:
            return {"enum": list(get_args(tp))}
        if origin is tuple:
            item = self.type_schema(get_args(tp)[0])
            array = {"type": "array", "items": item}
            return array if "$ref" in item else {"anyOf": [array, item]}  # one scalar is a one-item list
        if dataclasses.is_dataclass(tp):
            return {"$ref": f"#/$defs/{self.section(tp)}"}
        simple = {int: "integer", float: "number", bool: "boolean", str: "string", type(None): "null"}
        if tp in simple:
            return {"type": simple[tp]}
        raise TypeError(f"no JSON Schema for spec type {tp!r}")  # a programming error: a new kind of field

    def section(self, cls: type) -> str:
        """Add ``cls`` to ``$defs`` (once) and return its name."""
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # reserved first: sections may nest
            self.defs[name] = self.object_schema(cls)
        return name

    def object_schema(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls, include_extras=True)
        docs = field_docs(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):
            prop = self.type_schema(hints[f.name])
            if f.name in docs:
                prop["description"] = docs[f.name]
            if f.default is not dataclasses.MISSING:
                prop["default"] = plain(f.default)
            elif f.default_factory is dataclasses.MISSING:
                required.append(f.name)
            properties[f.name] = prop
        schema: dict[str, Any] = {"type": "object", "title": cls.__name__}
        if cls.__doc__:
            schema["description"] = inspect.cleandoc(cls.__doc__)
        schema |= {"properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        return schema


def spec_schema(cls: type, *, title: str = "lmpipe pipeline spec") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of spec files parsed into dataclass ``cls``."""
    builder = _Builder()
    root = builder.object_schema(cls)
    return {"$schema": JSON_SCHEMA_DIALECT, **root, "title": title, "$defs": dict(sorted(builder.defs.items()))}
