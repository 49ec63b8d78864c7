"""The publishing primitive every layer uses: whole files appear at once, one publisher at a time.

Readers of a published file (a manifest, a snapshot, a CURRENT pointer) see the old content or
the new content, never a part: the new content is written under a temporary name, flushed to
disk and renamed over the old name.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".publish.lock"


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new content, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not keep a half-written file taking space
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def folder_lock(folder: Path, name: str = LOCK_FILE) -> Iterator[None]:
    """An exclusive lock on ``folder`` among the processes of this machine (or shared volume)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def folder_read_lock(folder: Path, name: str = LOCK_FILE) -> Iterator[None]:
    """A shared lock on ``folder``: what several files there say is read between two publishes, never
    across one. Needs only read access; a folder nobody published to yet needs no lock."""
    try:
        descriptor = os.open(folder / name, os.O_RDONLY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH)
        yield
    finally:
        os.close(descriptor)  # releases the lock


@contextmanager
def private_scratch(parent: Path, prefix: str) -> Iterator[Path]:
    """A folder of this process's own under ``parent`` for data that outgrows memory, removed when the block
    ends. One left by a process that was killed is removed by the next that starts: its lock is free."""
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"{prefix}-*"):
        _remove_if_abandoned(stale)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent))
    with (folder / LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held while this process lives: the folder is in use
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _remove_if_abandoned(folder: Path) -> None:
    try:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # being made right now (no lock file yet), or gone
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # its process is alive
    finally:
        os.close(descriptor)  # releases the lock if we took it
    log.info("removing %s, left by a process that ended without removing it", folder)
    shutil.rmtree(folder, ignore_errors=True)


def out_of_space(error: BaseException) -> bool:
    """Whether ``error`` says the filesystem is full, whichever library raised it.

    Python raises OSError with ENOSPC; Delta's Rust writer and DuckDB raise their own types whose
    message carries the operating system's text.
    """
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


class SpaceWait:
    """A writer that met a full disk: it says so once, retries on a fixed cadence, says when it resumed.

    What it failed to write stays with the caller (in memory, uncommitted); while it waits the caller
    stops taking more (pauses its consumer), so memory stays bounded and nothing is lost or doubled.
    """

    def __init__(self, writer: str, folder: Path, retry_s: float = 2.0) -> None:
        self.writer = writer
        self.folder = folder
        self.retry_s = retry_s
        self.since: float | None = None
        self._next_try = 0.0
        self.failures = 0

    @property
    def waiting(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.error(
                "%s: no space left on device under %s (%s). Nothing is committed until space returns; "
                "it retries every %.0f s and resumes on its own. Free space there or grow the volume.",
                self.writer,
                self.folder,
                str(error).splitlines()[0][:200],
                self.retry_s,
            )
        self._next_try = now + self.retry_s

    def may_try(self) -> bool:
        return self.since is None or time.monotonic() >= self._next_try

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning(
                "%s: space is back under %s; committing again after %.0f s and %d failed attempts",
                self.writer,
                self.folder,
                time.monotonic() - self.since,
                self.failures,
            )
        self.since = None
        self.failures = 0
