"""Which version serves: activation, promotion and canaries pass the promotion gate (`cnnlab gate`)
on the service's labelled gate folder, or need an admin's override with a reason; shadow runs
need neither (their answers reach nobody). Every decision, refusals included, goes into the
governance log."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import anyio
from fastapi import HTTPException

from cnnlab.errors import CnnlabError
from cnnlab.serve.models import LoadedModel
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import Store
from cnnlab.tasks.gate import gate

log = logging.getLogger("cnnlab.serve")
REFUSED = "gate refused"


class Release:
    """The gate's verdicts are kept per (candidate, active) pair of weights in this process: a canary
    gated here is not gated again when it is promoted through this worker (another worker runs the
    same gate again, with the same answer)."""

    def __init__(self, settings: ServeSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._verdicts: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

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
                # The gate read the bundles from disk: they must be the weights this service serves.
                for described, model in ((report.candidate, candidate), (report.active, active)):
                    if described["weights_sha256"] != model.sha256:
                        raise CnnlabError(
                            f"{model.run_dir} no longer holds the weights of {model.name}@{model.version}"
                        )
                self._verdicts[key] = report.to_dict()
            return self._verdicts[key]

    async def cleared(
        self, candidate: LoadedModel, active: LoadedModel, by: str | None, override_reason: str | None, what: str
    ) -> tuple[str, str | None]:
        """(the governance log's reason, the gate's result as JSON) for putting `candidate` in front of
        patients instead of `active`; 409, logged, when the gate refuses it (or has no folder, or cannot
        run) and no override reason was given."""
        if self.settings.gate_data is None:
            if override_reason:
                return f"override without a gate (no gate folder configured): {override_reason}", None
            self._refuse(candidate, by, f"{what}: no gate folder configured", None)
            raise HTTPException(
                409,
                f"{what} needs the promotion gate, and this service has no gate folder (cnnlab serve --gate-data); "
                "give an override_reason to go ahead without it",
            )
        try:
            result = await anyio.to_thread.run_sync(self._gate, candidate, active)
        except Exception as exc:  # a bad folder, a bundle gone from disk, out of memory: the gate did not run
            problem = str(exc) if isinstance(exc, CnnlabError) else f"{exc.__class__.__name__} (see the service log)"
            if not isinstance(exc, CnnlabError):
                log.exception("the promotion gate of %s@%s failed", candidate.name, candidate.version)
            if override_reason:
                return f"override, the gate could not run ({problem}): {override_reason}", None
            self._refuse(candidate, by, f"{what}: the gate could not run ({problem})", None)
            raise HTTPException(409, f"the promotion gate could not run: {problem}") from None
        gate_json = json.dumps(result, sort_keys=True)
        if result["passed"]:
            return "the gate passed", gate_json
        reasons = "; ".join(result["reasons"])
        if override_reason:
            return f"override of a refused gate ({reasons}): {override_reason}", gate_json
        self._refuse(candidate, by, f"{what}: {reasons}", gate_json)
        raise HTTPException(
            409, f"the promotion gate refused {candidate.name}@{candidate.version} against {active.version}: {reasons}"
        )

    def _refuse(self, candidate: LoadedModel, by: str | None, reason: str, gate_json: str | None) -> None:
        self.store.log_event(candidate.name, REFUSED, candidate.version, by, reason, gate_json)
