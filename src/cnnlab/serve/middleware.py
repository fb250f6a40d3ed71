"""Around every HTTP request, below the routes: request id, concurrency and upload limits, a JSON
500 for anything unexpected, metrics and the audit row."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnlab.serve.metrics import ServiceMetrics
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import Store

log = logging.getLogger("cnnlab.serve")

_OUTCOMES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    429: "rate_limited",
    503: "busy",
    504: "timeout",
}


class ServiceMiddleware:
    """Around every HTTP request: a request id, the concurrency limit (503 at once when full),
    the upload size limit while the body streams in (413), a JSON 500 with no traceback for
    anything unexpected, metrics, and one audit row whatever the outcome."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, store: Store, metrics: ServiceMetrics) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.in_flight = 0  # one event loop: no await between the check and the increment

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        sent: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"], sent["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        limited = scope["path"].startswith("/v1/")
        holding = False
        try:
            if limited:
                if self.in_flight >= self.settings.max_concurrency:
                    await self._reply(
                        send_with_id, 503, "the service is at its concurrency limit; retry shortly", request_id
                    )
                    return
                self.in_flight += 1
                holding = True
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_limited(scope, receive)
                if body is None:
                    await self._reply(
                        send_with_id,
                        413,
                        f"the request body is over the {self.settings.max_upload_bytes:,}-byte limit",
                        request_id,
                    )
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        except Exception:
            # The log has the traceback (it stays on the server); the client gets the request id only.
            log.exception("request %s failed", request_id)
            if not sent["started"]:
                await self._reply(send_with_id, 500, "internal error; quote the request id", request_id)
        finally:
            if holding:
                self.in_flight -= 1
            await self._record(scope, state, request_id, int(sent["status"]), time.perf_counter() - started)

    async def _read_limited(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (the rest is never read)."""
        limit = self.settings.max_upload_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return None
                except ValueError:
                    return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _reply(self, send: Send, status: int, detail: str, request_id: str) -> None:
        body = json.dumps({"detail": detail, "request_id": request_id}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 413:
            headers.append((b"connection", b"close"))  # the unread rest of the body is not worth draining
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _record(self, scope: Scope, state: dict[str, Any], request_id: str, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.latency.labels(route).observe(seconds)  # the request count is the audit row's
        outcome = state.get("outcome") or (
            "ok" if status < 400 else _OUTCOMES.get(status, "error" if status >= 500 else "rejected")
        )
        log.info("%s %s %s %s %.1f ms", request_id, scope["method"], route, status, seconds * 1000)
        try:
            await anyio.to_thread.run_sync(
                lambda: self.store.append_audit(
                    request_id=request_id,
                    key_id=state.get("key_id"),
                    role=state.get("role"),
                    method=scope["method"],
                    route=route,
                    model_version=state.get("model_version"),
                    input_sha256=state.get("input_sha256"),
                    outcome=outcome,
                    status=status,
                )
            )
        except Exception:
            log.exception("request %s: the audit row could not be written", request_id)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the already-read body to the app, then waits for the disconnect."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
