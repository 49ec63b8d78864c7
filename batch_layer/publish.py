"""Publishing a batch view version atomically: write-then-rename, guarded by compare-and-swap.

The manifest file is written under a temporary name and renamed into place, then CURRENT is
replaced the same way; a reader sees the old version or the new one, never a mixture. A file
lock serialises publishers on one machine, and the compare-and-swap on the base version makes a
run that planned on an older version fail instead of rolling the views back.
"""

from __future__ import annotations

from pathlib import Path

from lambda_contracts.manifest import CURRENT, Manifest, current_version, manifest_path, read_manifest
from lambda_contracts.plumbing.files import folder_lock, write_atomically


class SupersededError(RuntimeError):
    """Another run published since this run planned; re-plan from the current version."""


def publish(root: Path, manifest: Manifest) -> Manifest:
    """Make ``manifest`` the current version if the current one is still its base.

    Publishing the same run again is a no-op that returns what was published.
    """
    with folder_lock(root):
        current = current_version(root)
        if current >= manifest.version:
            published = read_manifest(root, manifest.version)
            if published.run_id == manifest.run_id:
                return published
        if current != manifest.base_version:
            raise SupersededError(
                f"batch views moved to version {current} since run {manifest.run_id} planned on version "
                f"{manifest.base_version}; run it again to plan on the current version"
            )
        write_atomically(manifest_path(root, manifest.version), manifest.to_json())
        write_atomically(root / CURRENT, f"{manifest.version}\n")
        return manifest
