"""Can a reader schema read what a writer schema wrote? Avro's schema resolution rules, checked ahead of time.

A schema change ships only if every consumer can still decode every record on the topic: new readers
read old writers (backward) and old readers read new writers (forward), across all registered
versions (what registries call FULL_TRANSITIVE). fastavro applies these rules while it decodes; this
module applies the same rules (Avro 1.11 specification, "Schema Resolution") to the schemas alone, so
an incompatible change is refused by a test before any record is written with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Schema = Any
"""A schema as JSON: a type name, a list (union) or an object."""

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
"""(writer, reader) pairs the specification lets a reader promote."""


class _Names:
    """Named types (records, enums, fixed) of one schema by full name, so references resolve."""

    def __init__(self, schema: Schema) -> None:
        self.types: dict[str, Mapping[str, Any]] = {}
        self._collect(schema, "")

    def _collect(self, schema: Schema, namespace: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
        elif isinstance(schema, Mapping):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                name = full_name(schema, namespace)
                self.types[name] = schema
                inner = name.rpartition(".")[0]
                for field in schema.get("fields", ()):
                    self._collect(field["type"], inner)
            elif kind == "array":
                self._collect(schema["items"], namespace)
            elif kind == "map":
                self._collect(schema["values"], namespace)
            else:
                self._collect(kind, namespace)

    def resolve(self, schema: Schema, namespace: str) -> tuple[Schema, str]:
        """The definition behind a name reference, and the namespace its fields live in."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            name = schema if "." in schema else f"{namespace}.{schema}".lstrip(".")
            schema = self.types.get(name, self.types.get(schema, schema))
        if isinstance(schema, Mapping) and schema.get("type") in ("record", "error", "enum", "fixed"):
            return schema, full_name(schema, namespace).rpartition(".")[0]
        return schema, namespace


def full_name(schema: Mapping[str, Any], namespace: str) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def incompatibilities(reader: Schema, writer: Schema) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``; empty when it can."""
    return _Check(_Names(reader), _Names(writer)).compare(reader, "", writer, "", "$")


class _Check:
    def __init__(self, reader_names: _Names, writer_names: _Names) -> None:
        self.reader_names = reader_names
        self.writer_names = writer_names
        self.seen: set[tuple[str, str]] = set()  # recursive types: a pair of records is checked once

    def compare(self, reader: Schema, reader_ns: str, writer: Schema, writer_ns: str, path: str) -> list[str]:
        reader, reader_ns = self.reader_names.resolve(reader, reader_ns)
        writer, writer_ns = self.writer_names.resolve(writer, writer_ns)
        if isinstance(writer, list):  # every branch the writer may have used must be readable
            problems: list[str] = []
            for branch in writer:
                problems += self.compare(reader, reader_ns, branch, writer_ns, path)
            return problems
        if isinstance(reader, list):  # a named type resolves to the branch of its name; others to the first that reads
            if isinstance(writer, Mapping) and "name" in writer:
                for branch in reader:
                    resolved, branch_ns = self.reader_names.resolve(branch, reader_ns)
                    if isinstance(resolved, Mapping) and _same_name(resolved, branch_ns, writer, writer_ns):
                        return self.compare(resolved, branch_ns, writer, writer_ns, f"{path}<{writer['name']}>")
            for branch in reader:
                if not self.compare(branch, reader_ns, writer, writer_ns, path):
                    return []
            return [f"{path}: no branch of the reader's union {_label(reader)} reads the writer's {_label(writer)}"]
        reader_kind, writer_kind = _kind(reader), _kind(writer)
        if reader_kind != writer_kind and (writer_kind, reader_kind) not in _PROMOTIONS:
            return [f"{path}: the writer's {_label(writer)} cannot be read as {_label(reader)}"]
        if _logical(reader) != _logical(writer):
            return [f"{path}: logical type {_logical(writer)} cannot be read as {_logical(reader)}"]
        if reader_kind == "record":
            return self._records(reader, reader_ns, writer, writer_ns, path)
        if reader_kind == "enum":
            return _enums(reader, writer, path)
        if reader_kind == "array":
            return self.compare(reader["items"], reader_ns, writer["items"], writer_ns, f"{path}[]")
        if reader_kind == "map":
            return self.compare(reader["values"], reader_ns, writer["values"], writer_ns, f"{path}{{}}")
        if reader_kind == "fixed" and reader["size"] != writer["size"]:
            return [f"{path}: fixed size {writer['size']} cannot be read as size {reader['size']}"]
        return []

    def _records(self, reader: Schema, reader_ns: str, writer: Schema, writer_ns: str, path: str) -> list[str]:
        names = (full_name(reader, reader_ns), full_name(writer, writer_ns))
        if not _same_name(reader, reader_ns, writer, writer_ns):
            return [f"{path}: record {names[1]} cannot be read as record {names[0]}"]
        if names in self.seen:
            return []
        self.seen.add(names)
        written = {field["name"]: field for field in writer["fields"]}
        problems: list[str] = []
        for field in reader["fields"]:
            match = next((written[n] for n in (field["name"], *field.get("aliases", ())) if n in written), None)
            where = f"{path}.{field['name']}"
            if match is not None:
                problems += self.compare(field["type"], reader_ns, match["type"], writer_ns, where)
            elif "default" not in field:
                problems.append(
                    f"{where}: the reader needs this field, the writer does not write it, and it has no default"
                )
        return problems


def _enums(reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> list[str]:
    missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
    if missing and "default" not in reader:
        return [f"{path}: the reader's enum {reader['name']} lacks symbols {missing} and has no default"]
    return []


def _kind(schema: Schema) -> str:
    return str(schema["type"] if isinstance(schema, Mapping) else schema)


def _logical(schema: Schema) -> tuple[object, ...] | None:
    if not isinstance(schema, Mapping) or "logicalType" not in schema:
        return None
    return (schema["logicalType"], schema.get("precision"), schema.get("scale"))


def _label(schema: Schema) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_label(branch) for branch in schema) + "]"
    if isinstance(schema, Mapping):
        return str(schema.get("name", schema["type"]))
    return str(schema)


def _same_name(reader: Mapping[str, Any], reader_ns: str, writer: Mapping[str, Any], writer_ns: str) -> bool:
    reader_name, writer_name = full_name(reader, reader_ns), full_name(writer, writer_ns)
    aliases = {a if "." in a else f"{reader_ns}.{a}".lstrip(".") for a in reader.get("aliases", ())}
    return writer_name == reader_name or writer_name in aliases or writer["name"] == reader["name"]
