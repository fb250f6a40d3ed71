"""Which version serves: activation and promotion pass the promotion gate (`cnnlab gate`) on the
service's labelled gate folder, or need an admin's override with a reason; canary and shadow
rollouts; rollback. Every decision, refusals included, goes into the governance log."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
from fastapi import HTTPException

from cnnlab.errors import CnnlabError
from cnnlab.serve.models import LoadedModel, ModelRegistry
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import Store
from cnnlab.tasks.gate import gate


class Release:
    """The gate's verdicts are kept per (candidate, active) pair of weights: a canary gated once is
    not gated again when it is promoted, unless the active version changed meanwhile."""

    def __init__(self, settings: ServeSettings, models: ModelRegistry, store: Store) -> None:
        self.settings = settings
        self.models = models
        self.store = store
        self._verdicts: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def loaded(self, name: str, version: str) -> LoadedModel:
        if not self.models.versions(name):
            raise HTTPException(404, f"no model named '{name}' is served")
        model = self.models.versions(name).get(version)
        if model is None:
            raise HTTPException(404, f"model '{name}' has no loaded version '{version}'")
        return model

    def _gate(self, candidate: LoadedModel, active: LoadedModel) -> dict[str, Any]:
        """The gate's result as a dict (blocking: it runs both bundles over the gate folder)."""
        key = (candidate.sha256, active.sha256)
        with self._lock:  # one gate at a time: two would only race for the same CPU
            if key not in self._verdicts:
                assert self.settings.gate_data is not None
                report = gate(
                    candidate.run_dir,
                    active.run_dir,
                    str(self.settings.gate_data),
                    resamples=self.settings.gate_resamples,
                    device=self.settings.device,
                    progress=False,
                )
                self._verdicts[key] = report.to_dict()
            return self._verdicts[key]

    async def cleared(
        self, candidate: LoadedModel, by: str | None, override_reason: str | None, what: str
    ) -> tuple[str, str | None]:
        """(the governance log's reason, the gate's result as JSON) for putting `candidate` in front of
        patients; 409 when the gate refuses it (or cannot run) and no override reason was given."""
        active = self.models.active(candidate.name)
        assert active is not None
        if self.settings.gate_data is None:
            if override_reason:
                return f"override without a gate (no gate folder configured): {override_reason}", None
            raise HTTPException(
                409,
                f"{what} needs the promotion gate, and this service has no gate folder (cnnlab serve --gate-data); "
                "give an override_reason to go ahead without it",
            )
        try:
            result = await anyio.to_thread.run_sync(self._gate, candidate, active)
        except CnnlabError as exc:
            if override_reason:
                return f"override, the gate could not run ({exc}): {override_reason}", None
            raise HTTPException(409, f"the promotion gate could not run: {exc}") from None
        gate_json = json.dumps(result, sort_keys=True)
        if result["passed"]:
            return "the gate passed", gate_json
        reasons = "; ".join(result["reasons"])
        if override_reason:
            return f"override of a refused gate ({reasons}): {override_reason}", gate_json
        self.store.log_event(candidate.name, "gate refused", candidate.version, by, reasons, gate_json)
        raise HTTPException(
            409, f"the promotion gate refused {candidate.name}@{candidate.version} against {active.version}: {reasons}"
        )
