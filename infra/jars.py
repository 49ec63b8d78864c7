"""Fetching pinned jars from Maven Central (Kafka broker, Delta for Spark) and checking Java.

Each POM pins every jar; installing again is a no-op unless the POM changed, which a stamp
file holding the POM's hash detects.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

INFRA = Path(__file__).resolve().parent
MIN_JAVA = 17


class InstallError(RuntimeError):
    """The broker cannot be installed or run on this machine; the message says what to do."""


def java_major_version(java: str = "java") -> int:
    """The major version of ``java`` on PATH, or an ``InstallError`` saying how to get one."""
    if shutil.which(java) is None:
        raise InstallError(
            f"Java {MIN_JAVA}+ is needed for the Kafka broker but `java` is not on PATH: "
            "install it with `apt-get install -y openjdk-17-jre-headless`"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        raise InstallError(f"could not read the Java version from: {result.stderr.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise InstallError(
            f"Kafka 4 needs Java {MIN_JAVA}+, found Java {major}: "
            "install it with `apt-get install -y openjdk-17-jre-headless`"
        )
    return major


@dataclass(frozen=True)
class JarSet:
    """Jars pinned by a POM and copied by Maven into ``folder`` (the POM's output directory)."""

    name: str
    pom: Path
    folder: Path

    @property
    def stamp(self) -> Path:
        return self.folder / ".pom-sha256"

    def pom_digest(self) -> str:
        return hashlib.sha256(self.pom.read_bytes()).hexdigest()

    def installed(self) -> bool:
        return self.stamp.exists() and self.stamp.read_text().strip() == self.pom_digest()

    def jars(self) -> list[Path]:
        return sorted(self.folder.glob("*.jar"))

    def install(self, progress: Callable[[str], None] = print, force: bool = False) -> Path:
        """Copy the pinned jars into ``folder``; a no-op when they are there and the POM is unchanged."""
        if self.installed() and not force:
            return self.folder
        if shutil.which("mvn") is None:
            raise InstallError(
                f"Maven is needed once to fetch the {self.name} jars but `mvn` is not on PATH: "
                "install it with `apt-get install -y maven`"
            )
        if self.folder.exists():
            shutil.rmtree(self.folder)  # a half-finished or outdated set: start clean
        progress(f"Fetching the {self.name} jars pinned in {self.pom.relative_to(INFRA.parent)} ...")
        command = ["mvn", "-B", "-f", str(self.pom), "dependency:copy-dependencies"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
            assert process.stdout is not None
            tail: list[str] = []
            for raw_line in process.stdout:
                line = raw_line.rstrip()
                tail = [*tail[-29:], line]
                if line.startswith("Downloaded from"):
                    progress("  " + line.split("/")[-1])
            code = process.wait()
        if code != 0:
            raise InstallError(
                f"Maven could not fetch the {self.name} jars (exit {code}). Last output:\n" + "\n".join(tail)
            )
        self.stamp.write_text(self.pom_digest() + "\n")
        progress(f"{self.name} jars ready: {len(self.jars())} jars in {self.folder}")
        return self.folder


KAFKA_JARS = JarSet("Kafka broker", INFRA / "kafka" / "pom.xml", INFRA / "kafka" / "libs")
DELTA_SPARK_JARS = JarSet("Delta Lake for Spark", INFRA / "spark" / "pom.xml", INFRA / "spark" / "jars")
KAFKA_LOG4J_CONFIG = INFRA / "kafka" / "log4j2.properties"


def install_all(progress: Callable[[str], None] = print) -> None:
    """Every pinned jar set the embedded mode needs."""
    for jar_set in (KAFKA_JARS, DELTA_SPARK_JARS):
        jar_set.install(progress)
