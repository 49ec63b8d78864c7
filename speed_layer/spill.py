"""Raw events of a rebuilding partition, kept on disk instead of in memory until it is published.

A rebuild (from a batch cutoff, say) re-reads everything the partition had published, and keeps those
events raw, not aggregated, until it is back where it was (``PartitionState.hold_until``): a copy
another worker publishes meanwhile must still be taken out of them, and partial rows cannot give an
event back (a max, a min). Under load that is every event since the cutoff: 1.1-1.4 GiB in the
overload benchmark. Beyond ``speed_rebuild_memory_events`` (100,000 by default, ~25 MiB) they wait
here in Arrow IPC files; ids taken out meanwhile are kept aside (``retracted``) and filtered out
when the files are read back, a file at a time.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from lambda_contracts.plumbing.event_ids import IdSet

log = logging.getLogger(__name__)

_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
_numbers = itertools.count()


@dataclass
class Spill:
    """Files of raw events (``EVENT_SCHEMA``) of one partition's rebuild, and ids taken out since written."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    retracted: IdSet = field(default_factory=lambda: IdSet(positions=False))
    rows: int = 0

    def write(self, chunks: list[pa.Table]) -> None:
        """Write ``chunks`` to a new file (the caller then drops them from memory)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{next(_numbers):08d}.arrow"
        table = pa.concat_tables(chunks)
        try:
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=_WRITE_OPTIONS) as out:
                out.write_table(table)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if not self.files:
            log.info("a rebuild keeps its raw events in %s until it publishes (memory stays bounded)", self.folder)
        self.files.append(path)
        self.rows += table.num_rows

    def retract(self, ids: pa.Array) -> None:
        """These ids (all counted here, maybe in a file) were counted elsewhere first: leave them out."""
        if len(ids):
            self.retracted.add(ids)

    def drain(self) -> Iterator[pa.Table]:
        """Each file's events but the retracted ones, a file at a time; the files are gone afterwards."""
        while self.files:
            path = self.files[0]
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            if len(self.retracted):
                table = table.filter(pc.invert(pa.array(self.retracted.contains(table.column("event_id")))))
            yield table
            self.files.pop(0)
            path.unlink(missing_ok=True)
        self.discard()

    def discard(self) -> None:
        """Forget what is spilled (a restart reads it again from Kafka)."""
        for path in self.files:
            path.unlink(missing_ok=True)
        self.files, self.retracted, self.rows = [], IdSet(positions=False), 0
