"""Getting a docker-compose deployment ready: secrets, build inputs, and the Debian base image.

Images build with no network but Debian's package mirror: the locked Python environment comes
from wheels fetched on this host (``build/wheels``, exactly ``uv.lock``), the Kafka and Delta jars
from the Maven-pinned sets the embedded mode uses, and the one base image either from a registry
(the pinned official Debian tag) or, when no registry answers, made here with debootstrap from
the host's own Debian mirror and tagged as a local build.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.jars import INFRA, install_all
from infra.kafka_node import new_cluster_id
from infra.npm import CHART_JS

REPO = INFRA.parent
COMPOSE_FILE = INFRA / "compose" / "compose.yaml"
ENV_FILE = INFRA / "compose" / ".env"
WHEELS = REPO / "build" / "wheels"
OFFICIAL_BASE = "debian:bookworm-20250520-slim"
"""The pinned official base (Docker Hub's dated bookworm tag matching the Debian snapshot we test)."""
LOCAL_BASE = "exact-lambda/debian-bookworm:debootstrap"
"""A base made here with debootstrap: named as a local build, never as the official image."""
BASE_IMAGE_VARIABLE = "LAMBDA_BASE_IMAGE"
PULL_TIMEOUT_S = 60.0


class DeployError(RuntimeError):
    """A deployment step cannot run here; the message says what is missing and what to do."""


# -- secrets -----------------------------------------------------------------------------------


def fresh_secrets() -> dict[str, str]:
    """Every secret the compose file requires, newly random."""
    return {
        "KAFKA_CLUSTER_ID": new_cluster_id(),
        "LAMBDA_AIRFLOW_PASSWORD": secrets.token_urlsafe(18),
        "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(48),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "LAMBDA_SERVING_PG_PASSWORD": secrets.token_urlsafe(18),
    }


def write_env(path: Path = ENV_FILE, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Write a complete ``.env`` with fresh secrets; refuse to overwrite one (its secrets are in use)."""
    if path.exists():
        raise DeployError(
            f"{path} exists and holds the secrets your deployment's volumes were made with; "
            "it is not overwritten. Delete it only together with the volumes (`docker compose down -v`)."
        )
    values = fresh_secrets() | (extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("# Written by `lambdactl deploy env`: fresh random secrets for this deployment. Keep it private.\n")
        out.writelines(f"{name}={value}\n" for name, value in values.items())
    return values


def set_env_value(path: Path, name: str, value: str) -> None:
    """Add or replace ``name=value`` in an env file, keeping every other line."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if not line.startswith(f"{name}=")]
    path.write_text("\n".join([*kept, f"{name}={value}"]) + "\n")


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values


# -- build inputs ------------------------------------------------------------------------------


def _tool(name: str) -> str:
    """A tool ``./dev setup`` installs in ``.tools/`` (uv, pip), or the one on PATH."""
    local = REPO / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise DeployError(f"`{name}` is needed to fetch the wheels the images install: run `./dev setup` first")
    return found


def lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("uv.lock", "pyproject.toml"):
        digest.update((REPO / name).read_bytes())
    return digest.hexdigest()


def prepare_wheels(progress: Callable[[str], None] = print, folder: Path = WHEELS) -> Path:
    """Every wheel of the locked runtime environment (and uv) in ``folder``; a no-op when current."""
    stamp = folder / ".lock-sha256"
    if stamp.exists() and stamp.read_text().strip() == lock_digest():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    requirements = folder / "requirements.txt"
    progress("exporting the locked runtime requirements (uv.lock, extra `deploy`) ...")
    _run(
        [
            _tool("uv"),
            "export",
            "--frozen",
            "--no-dev",
            "--extra",
            "deploy",
            "--no-hashes",
            "--no-emit-project",
            "--no-header",
            "--output-file",
            str(requirements),
        ],
        "uv export",
    )
    uv_version = _run([_tool("uv"), "--version"], "uv --version").split()[1]
    progress(f"fetching {sum(1 for line in requirements.read_text().splitlines() if '==' in line)} wheels ...")
    _run(
        [
            _tool("pip"),
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--wheel-dir",
            str(folder),
            "-r",
            str(requirements),
            f"uv=={uv_version}",
        ],
        "pip wheel",
    )
    stamp.write_text(lock_digest() + "\n")
    progress(f"wheels ready in {folder} ({sum(f.stat().st_size for f in folder.glob('*.whl')) / 1e6:,.0f} MB)")
    return folder


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise DeployError(f"{what} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout


# -- the base image ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseImage:
    name: str
    how: str


def docker_ok() -> None:
    if shutil.which("docker") is None:
        raise DeployError("the `docker` command is missing: install Docker (Debian: `apt-get install docker.io`)")
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DeployError(f"no Docker engine answers: {result.stderr.strip()} (start it: `dockerd &` as root)")


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0


def ensure_base_image(progress: Callable[[str], None] = print) -> BaseImage:
    """The official pinned base if present or pullable, else a local debootstrap build."""
    docker_ok()
    if image_exists(OFFICIAL_BASE):
        return BaseImage(OFFICIAL_BASE, "present")
    progress(f"pulling {OFFICIAL_BASE} ...")
    try:
        pulled = subprocess.run(
            ["docker", "pull", OFFICIAL_BASE], capture_output=True, text=True, timeout=PULL_TIMEOUT_S, check=False
        )
        if pulled.returncode == 0:
            return BaseImage(OFFICIAL_BASE, "pulled")
        reason = pulled.stderr.strip().splitlines()[-1] if pulled.stderr.strip() else f"exit {pulled.returncode}"
    except subprocess.TimeoutExpired:
        reason = f"no answer in {PULL_TIMEOUT_S:.0f}s"
    progress(f"no registry answers ({reason}); building the base locally with debootstrap")
    if image_exists(LOCAL_BASE):
        return BaseImage(LOCAL_BASE, "present (local debootstrap build)")
    build_local_base(progress)
    return BaseImage(LOCAL_BASE, "built with debootstrap")


def debian_mirror() -> str:
    """The host's Debian mirror, from its apt sources."""
    for path in [*sorted(Path("/etc/apt/sources.list.d").glob("*.sources")), Path("/etc/apt/sources.list")]:
        if not path.exists():
            continue
        text = path.read_text()
        for stanza in text.split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", stanza, re.M) and (
                uri := re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            ):
                return uri.group(1)
        if found := re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M):
            return found.group(1)
    raise DeployError("no Debian bookworm mirror found in /etc/apt/sources.list*: debootstrap needs one")


def build_local_base(progress: Callable[[str], None] = print) -> None:
    """``debootstrap --variant=minbase bookworm`` from the host's mirror, imported as ``LOCAL_BASE``."""
    if os.geteuid() != 0:
        raise DeployError("making the base image with debootstrap needs root (or a reachable registry)")
    if shutil.which("debootstrap") is None:
        raise DeployError("debootstrap is missing: `apt-get install -y debootstrap` (or make a registry reachable)")
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="debootstrap-") as scratch:
        root = Path(scratch) / "rootfs"
        progress(f"debootstrap --variant=minbase bookworm from {mirror} (about a minute) ...")
        _run(["debootstrap", "--variant=minbase", "bookworm", str(root), mirror], "debootstrap")
        (root / "etc/apt/sources.list").write_text(
            f"deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\n"
            f"deb {mirror.replace('/debian', '/debian-security')} bookworm-security main\n"
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "--change", 'CMD ["bash"]', "-", LOCAL_BASE],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        tar.wait()
        if imported.returncode != 0:
            raise DeployError(f"docker import failed: {imported.stderr.strip()}")
    progress(f"base image {LOCAL_BASE} ready")


def prepare(progress: Callable[[str], None] = print, env_file: Path = ENV_FILE) -> BaseImage:
    """Everything the images need before ``docker compose build``; records the base in ``env_file``."""
    install_all(progress)
    CHART_JS.install(progress)  # the dashboard image serves it; containers fetch nothing
    prepare_wheels(progress)
    base = ensure_base_image(progress)
    if env_file.exists():
        set_env_value(env_file, BASE_IMAGE_VARIABLE, base.name)
    progress(f"base image {base.name} ({base.how})")
    return base
