"""Fetching the pinned Apache Kafka jars from Maven Central and checking the Java runtime.

The POM in ``infra/kafka/pom.xml`` pins every jar; installing again is a no-op unless the POM
changed, which the stamp file (the POM's hash) detects.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LIBS = KAFKA_DIR / "libs"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
STAMP = LIBS / ".pom-sha256"
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


def pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_installed() -> bool:
    return STAMP.exists() and STAMP.read_text().strip() == pom_digest()


def install_jars(progress: Callable[[str], None] = print, force: bool = False) -> Path:
    """Copy the pinned broker jars into ``infra/kafka/libs``; returns that folder."""
    if jars_installed() and not force:
        return LIBS
    if shutil.which("mvn") is None:
        raise InstallError(
            "Maven is needed once to fetch the Kafka jars but `mvn` is not on PATH: "
            "install it with `apt-get install -y maven`"
        )
    if LIBS.exists():
        shutil.rmtree(LIBS)  # a half-finished or outdated set: start clean
    progress(f"Fetching the Kafka broker jars pinned in {POM.relative_to(KAFKA_DIR.parent.parent)} ...")
    command = ["mvn", "-B", "-f", str(POM), "dependency:copy-dependencies"]
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
        raise InstallError(f"Maven could not fetch the Kafka jars (exit {code}). Last output:\n" + "\n".join(tail))
    jar_count = len(list(LIBS.glob("*.jar")))
    STAMP.write_text(pom_digest() + "\n")
    progress(f"Kafka broker jars ready: {jar_count} jars in {LIBS}")
    return LIBS
