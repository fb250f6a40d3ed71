"""A small typed client of the triage service's HTTP API: the page's only way to models and data.

Every failure becomes an `ApiError` whose message a person can read (the API's own `detail` and the
HTTP status, or why the API could not be reached): pages show it as is, never a traceback."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

KEY_HEADER = "X-API-Key"
DEFAULT_TIMEOUT_S = 60.0
"""Above the service's own request timeout (30 s by default), so its 504 arrives before ours."""
UPLOAD_NAME = "upload"
"""The file name sent with an upload: the one on the clinician's disk may itself be patient data."""


class ApiError(Exception):
    """A request the API refused or could not answer; `str()` is the message to show."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status, or None when no answer came (unreachable, timed out)."""


@dataclass(frozen=True)
class Me:
    """Who the key is (GET /v1/me)."""

    key_id: str
    name: str
    role: str
    roles: tuple[str, ...]
    """Every role, least first."""
    explain_methods: tuple[str, ...]
    expires_at: str | None = None

    def may(self, role: str) -> bool:
        """Whether this key's role is `role` or above."""
        return self.roles.index(self.role) >= self.roles.index(role)


def error_message(response: requests.Response) -> str:
    """The API's `detail` (a sentence, or a list of validation errors) with the status."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):  # not JSON, or JSON but not an object
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors: where and what
        parts = []
        for error in detail:
            where = [str(p) for p in (error.get("loc") or []) if p not in ("body", "query", "path")]
            parts.append(f"{'.'.join(where)}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid"))
        detail = "; ".join(parts)
    text = str(detail) if detail else (response.reason or "error")
    return f"{text} (HTTP {response.status_code})"


class ApiClient:
    """One API key against one service."""

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.trust_env = False  # a proxy from the environment must not see patient images or keys
        if ca_file:  # trust_env is off, so REQUESTS_CA_BUNDLE would not reach here: an https API with its own CA
            self._session.verify = os.fspath(ca_file)
        if key:
            self._session.headers[KEY_HEADER] = key

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.base_url + path
        try:
            response = self._session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.Timeout:
            raise ApiError(f"the API at {self.base_url} did not answer within {self.timeout_s:g} s") from None
        except requests.exceptions.SSLError:
            raise ApiError(
                f"the API at {self.base_url} has a certificate this page does not trust "
                "(a private or self-signed one: start the page with --api-ca-file)"
            ) from None
        except requests.ConnectionError:
            raise ApiError(f"cannot reach the API at {self.base_url}") from None
        except requests.RequestException as exc:
            raise ApiError(f"the request to the API at {self.base_url} failed: {exc.__class__.__name__}") from None
        if not response.ok:
            raise ApiError(error_message(response), response.status_code)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"the API at {self.base_url} answered {path} with something other than JSON") from None

    # ------------------------------------------------------------------ who
    def health(self) -> None:
        """Raise an ApiError unless the service answers its (public) liveness probe."""
        self._request("GET", "/healthz")

    def me(self) -> Me:
        body = self._json("GET", "/v1/me")
        return Me(
            key_id=body["key_id"],
            name=body.get("name") or "",
            role=body["role"],
            roles=tuple(body["roles"]),
            explain_methods=tuple(body["explain_methods"]),
            expires_at=body.get("expires_at"),
        )

    # ------------------------------------------------------------------ predictions
    def predict(
        self, data: bytes, explain: str | None = None, model: str | None = None, patient_id: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/predict with the bytes as uploaded: the API decodes and judges them. `patient_id`
        goes in the form body, never the URL: query strings end up in access logs, and the service
        keeps only a keyed hash of it."""
        params = {k: v for k, v in (("explain", explain), ("model", model)) if v}
        files = {"file": (UPLOAD_NAME, data, "application/octet-stream")}
        form = {"patient_id": patient_id} if patient_id else None
        return self._json("POST", "/v1/predict", params=params, files=files, data=form)

    def prediction_image(self, request_id: str) -> bytes:
        """The PNG the API kept: the image as the model saw it."""
        return self._request("GET", f"/v1/predictions/{quote(request_id, safe='')}/image").content

    def explanation(self, request_id: str, method: str) -> dict[str, Any]:
        path = f"/v1/predictions/{quote(request_id, safe='')}/explanation"
        return self._json("GET", path, params={"method": method})

    # ------------------------------------------------------------------ feedback and review
    def send_feedback(self, request_id: str, label: str, agrees: bool, note: str = "") -> dict[str, Any]:
        body = {"request_id": request_id, "label": label, "agrees": agrees, "note": note}
        return self._json("POST", "/v1/feedback", json=body)

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/feedback", params={"request_id": request_id})

    def review_queue(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/review-queue", params={"limit": limit})

    def resolve(self, item_id: int, label: str | None, note: str = "") -> dict[str, Any]:
        return self._json("POST", f"/v1/review-queue/{int(item_id)}/resolve", json={"label": label, "note": note})

    # ------------------------------------------------------------------ monitor and models
    def monitor(self, model: str | None = None) -> dict[str, Any]:
        return self._json("GET", "/v1/monitor", params={"model": model} if model else None)

    def models(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/models")

    def activate(self, name: str, version: str, override_reason: str | None = None) -> dict[str, Any]:
        """Make `version` active. The API runs its release gate first and answers 409 when the gate
        refuses (or has no data); the same call with an `override_reason` goes through and is audited."""
        body = {"version": version, "override_reason": override_reason}
        return self._json("POST", _model_path(name, "activate"), json=body)

    # ------------------------------------------------------------------ rollouts and governance
    def rollout(
        self, name: str, version: str, mode: str, fraction: float, override_reason: str | None = None
    ) -> dict[str, Any]:
        """Start a canary (`fraction` of the traffic answered by `version`, behind the gate as `activate`)
        or a shadow run (`version` answers every request beside the active one, and nobody sees its answers)."""
        body = {"version": version, "mode": mode, "fraction": fraction, "override_reason": override_reason}
        return self._json("POST", _model_path(name, "rollout"), json=body)

    def promote(self, name: str, override_reason: str | None = None) -> dict[str, Any]:
        """The rollout's candidate becomes active (through the gate, as `activate`)."""
        return self._json("POST", _model_path(name, "promote"), json={"override_reason": override_reason})

    def rollback(self, name: str, reason: str) -> dict[str, Any]:
        """End the rollout in progress, or with none, reactivate the previously active version."""
        return self._json("POST", _model_path(name, "rollback"), json={"reason": reason})

    def events(self, name: str) -> list[dict[str, Any]]:
        """The model's governance log, newest first."""
        return self._json("GET", _model_path(name, "events"))


def _model_path(name: str, action: str) -> str:
    return f"/v1/models/{quote(name, safe='')}/{action}"
