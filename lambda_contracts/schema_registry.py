"""The Avro schemas of the events topic, versioned in this repository, and the rules a new version must pass.

The repository is the registry: ``avro/catalog.json`` gives each registered schema its version, its
schema id (carried in every Avro record, in the Confluent wire format, so a Schema Registry such as
Karapace could serve the same ids) and the SHA-256 of its JSON text (keys sorted; defaults and docs
included, which Avro's Parsing Canonical Form drops), which pins it: a registered schema never changes,
a change is a new version. ``check_catalog`` refuses a
catalog whose versions are not compatible both ways with every earlier one (FULL_TRANSITIVE), and
``lambdactl schemas check`` runs it before a change ships.

``contract_version`` names the schema the platform's consumers read with: the fields the event contract
(``events.py``), the lake and the views know. Records written with a later version are resolved into it
by Avro's rules (fields it does not know are skipped); that is what forward compatibility buys.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema

from lambda_contracts.avro_compat import incompatibilities

CATALOG_FOLDER = Path(__file__).resolve().parent / "avro"


@dataclass(frozen=True)
class RegisteredSchema:
    version: int
    schema_id: int
    source: dict[str, Any]
    fingerprint: str
    parsed: Any

    @property
    def canonical_fingerprint(self) -> str:
        return canonical_fingerprint(self.source)


@dataclass(frozen=True)
class Catalog:
    subject: str
    contract_version: int
    versions: tuple[RegisteredSchema, ...]

    def by_id(self, schema_id: int) -> RegisteredSchema | None:
        return self._ids.get(schema_id)

    @functools.cached_property
    def _ids(self) -> dict[int, RegisteredSchema]:
        return {s.schema_id: s for s in self.versions}

    def version(self, version: int) -> RegisteredSchema:
        for schema in self.versions:
            if schema.version == version:
                return schema
        known = ", ".join(str(s.version) for s in self.versions)
        raise ValueError(f"no Avro schema version {version} of {self.subject}; registered: {known}")

    @property
    def contract(self) -> RegisteredSchema:
        return self.version(self.contract_version)


def canonical_fingerprint(source: dict[str, Any]) -> str:
    """SHA-256 of the schema's JSON with sorted keys: a changed default or doc changes it too."""
    parse_schema(source)  # refuses what is not a valid Avro schema
    return hashlib.sha256(json.dumps(source, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_catalog(folder: Path = CATALOG_FOLDER) -> Catalog:
    """The catalog in ``folder`` as it is on disk (``check_catalog`` says whether it may ship)."""
    index = json.loads((folder / "catalog.json").read_text())
    versions = []
    for entry in index["versions"]:
        source = json.loads((folder / entry["file"]).read_text())
        versions.append(
            RegisteredSchema(
                version=int(entry["version"]),
                schema_id=int(entry["id"]),
                source=source,
                fingerprint=str(entry["fingerprint"]),
                parsed=parse_schema(source),
            )
        )
    return Catalog(str(index["subject"]), int(index["contract_version"]), tuple(versions))


@functools.cache
def events_catalog() -> Catalog:
    """The events topic's catalog shipped with this code (read once per process)."""
    catalog = load_catalog()
    problems = check_catalog(catalog)
    if problems:
        raise ValueError("the Avro schema catalog may not ship: " + "; ".join(problems))
    return catalog


def check_catalog(catalog: Catalog) -> list[str]:
    """Everything that stops this catalog from shipping; empty when it may."""
    problems: list[str] = []
    ids = [s.schema_id for s in catalog.versions]
    if len(set(ids)) != len(ids):
        problems.append(f"schema ids must be unique, got {ids}")
    numbers = [s.version for s in catalog.versions]
    if numbers != list(range(1, len(numbers) + 1)):
        problems.append(f"versions must be 1, 2, ... in order, got {numbers}")
    if catalog.contract_version not in numbers:
        problems.append(f"contract_version {catalog.contract_version} is not a registered version")
    for schema in catalog.versions:
        if schema.canonical_fingerprint != schema.fingerprint:
            problems.append(
                f"version {schema.version} changed after it was registered (fingerprint "
                f"{schema.canonical_fingerprint[:12]}..., registered {schema.fingerprint[:12]}...): "
                "registered schemas are immutable, add a new version instead"
            )
    for index, newer in enumerate(catalog.versions):
        for older in catalog.versions[:index]:
            for problem in incompatibilities(reader=newer.source, writer=older.source):
                problems.append(f"version {newer.version} cannot read version {older.version} (backward): {problem}")
            for problem in incompatibilities(reader=older.source, writer=newer.source):
                problems.append(f"version {older.version} cannot read version {newer.version} (forward): {problem}")
    return problems
