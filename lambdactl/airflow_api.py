"""Airflow's REST API and health endpoint, as the platform's commands and tests read them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from lambda_contracts.settings import Settings

HTTP_TIMEOUT_S = 3.0
ADMIN = "admin"


@dataclass(frozen=True)
class AirflowHealth:
    """Airflow's own report of its parts (scheduler, dag-processor, triggerer, metadatabase)."""

    parts: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    """Why there was no answer (then ``parts`` is empty)."""

    @property
    def healthy(self) -> bool:
        return self.error is None and all(state == "healthy" for state in self.parts.values())

    def state(self, part: str) -> str | None:
        return self.parts.get(part)


def airflow_url(settings: Settings) -> str:
    return settings.airflow_url or f"http://127.0.0.1:{settings.airflow_port}"


def airflow_health(url: str) -> AirflowHealth:
    """One look at ``/api/v2/monitor/health``; never raises."""
    try:
        health = _get_json(f"{url}/api/v2/monitor/health")
    except (urllib.error.URLError, OSError, ValueError) as error:
        return AirflowHealth(error=str(error))
    return AirflowHealth({name: str(value.get("status")) for name, value in health.items() if isinstance(value, dict)})


class AirflowLoginMissingError(RuntimeError):
    """No Airflow password is known for the REST API."""


def airflow_api(settings: Settings, path: str, password: str | None = None) -> Any:
    """GET ``path`` from Airflow's REST API, logged in as the configured user."""
    password = password or _airflow_password(settings)
    if password is None:
        raise AirflowLoginMissingError("set LAMBDA_AIRFLOW_PASSWORD to read from Airflow's REST API")
    url = airflow_url(settings)
    token = _post_json(f"{url}/auth/token", {"username": settings.airflow_username, "password": password})
    return _get_json(f"{url}{path}", {"Authorization": f"Bearer {token['access_token']}"})


def _airflow_password(settings: Settings) -> str | None:
    if settings.airflow_password.get_secret_value():
        return settings.airflow_password.get_secret_value()
    if settings.airflow_username == ADMIN:
        from lambdactl.airflow_local import saved_admin_password

        return saved_admin_password(settings)  # the embedded demo's generated one
    return None


def _get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.loads(response.read())


def _post_json(url: str, body: dict[str, str]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.loads(response.read())
