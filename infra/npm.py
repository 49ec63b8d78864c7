"""Browser libraries from the npm registry, pinned by version and integrity hash, fetched at install time.

The dashboard draws its charts with Chart.js. The package's tarball comes from the npm registry (the
only JavaScript source this machine reaches), is checked against the ``integrity`` the registry
publishes for that version (SHA-512, the hash ``package-lock.json`` pins), and the one file the page
loads is kept in the tree (``lambdactl/static/vendor/``, not committed), so the dashboard needs no
network when it runs, in the embedded mode and in the compose images alike.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.jars import InstallError

REGISTRY = "https://registry.npmjs.org"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class NpmAsset:
    package: str
    version: str
    integrity: str
    """``sha512-<base64>`` as the registry lists it under ``dist.integrity``."""
    member: str
    """The file inside the tarball's ``package/`` folder."""
    target: Path

    def installed(self) -> bool:
        return self.target.exists() and self.target.with_suffix(".version").read_text().strip() == self.version

    def install(self, progress: Callable[[str], None] = print) -> Path:
        if self.installed():
            return self.target
        url = f"{REGISTRY}/{self.package}/-/{self.package.split('/')[-1]}-{self.version}.tgz"
        progress(f"Fetching {self.package} {self.version} from the npm registry ...")
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                tarball = response.read()
        except OSError as error:
            raise InstallError(f"could not fetch {url} ({error}): is the npm registry reachable?") from None
        algorithm, _, expected = self.integrity.partition("-")
        digest = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
        if digest != expected:
            raise InstallError(f"{url} does not match its pinned integrity {self.integrity[:24]}...: refusing it")
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            member = archive.extractfile(f"package/{self.member}")
            if member is None:
                raise InstallError(f"{self.package} {self.version} has no {self.member}")
            content = member.read()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.target.write_bytes(content)
        self.target.with_suffix(".version").write_text(self.version + "\n")
        progress(f"{self.package} {self.version} ready: {self.target.relative_to(REPO)}")
        return self.target


CHART_JS = NpmAsset(
    package="chart.js",
    version="4.6.1",
    integrity="sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g==",
    member="dist/chart.umd.min.js",
    target=REPO / "lambdactl" / "static" / "vendor" / "chart.umd.min.js",
)
