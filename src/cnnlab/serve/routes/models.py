"""The loaded models and which one serves: activation and promotion behind the promotion gate (or an
audited override), canary and shadow rollouts, rollback, and the governance log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy.exc import IntegrityError

from cnnlab.serve.deps import Admin, ModelsDep, ReleaseDep, StoreDep, Viewer, served_name
from cnnlab.serve.models import LoadedModel, ModelRegistry
from cnnlab.serve.release import Release
from cnnlab.serve.schemas import ActivateIn, EventOut, PromoteIn, RollbackIn, RollbackOut, RolloutIn, RolloutOut
from cnnlab.serve.store import ROLLOUT_ENDED, StaleDecision, as_utc

router = APIRouter(prefix="/v1", tags=["models"])
GATED = {404: {"description": "No such model name or version"}, 409: {"description": "The gate refused; no override"}}


def _describe(models: ModelRegistry, model: LoadedModel) -> dict[str, Any]:
    role, fraction = models.role(model)
    return {**model.describe(role == "active"), "role": role, "fraction": fraction}


def _loaded(models: ModelRegistry, name: str, version: str) -> LoadedModel:
    model = models.versions(served_name(models, name)).get(version)
    if model is None:
        raise HTTPException(404, f"model '{name}' has no loaded version '{version}'")
    return model


def _active(models: ModelRegistry, name: str) -> LoadedModel:
    active = models.active(name)
    assert active is not None  # the name is served
    return active


@contextmanager
def _fresh() -> Iterator[None]:
    """409 for a decision another admin or worker overtook meanwhile (nothing was written), and for two
    first rollouts of one model at once (one of them wins)."""
    try:
        yield
    except StaleDecision as exc:
        raise HTTPException(409, f"{exc}; nothing was changed, look again and retry") from None
    except IntegrityError:
        raise HTTPException(409, "another decision on this model was written at the same moment; retry") from None


async def _go_live(
    models: ModelRegistry, release: Release, model: LoadedModel, by: str, override: str | None, action: str
) -> dict[str, Any]:
    """Activate `model` once the gate passes it against the active version (or an override reason is
    given), logged as `action`, provided that version is still active once the gate has run."""
    what = {"activate": "activation", "promote": "promotion"}[action]
    active = _active(models, model.name)
    reason, gate_json = await release.cleared(model, active, by, override, what)
    with _fresh():
        models.activate(model, by, action, reason, gate_json, expected_active=active)
    return {**_describe(models, model), "gate": json.loads(gate_json) if gate_json else None, "reason": reason}


@router.get("/models", summary="Every loaded model version, its role (active, canary, shadow, inactive) (viewer)")
def list_models(_who: Viewer, models: ModelsDep) -> list[dict[str, Any]]:
    return [_describe(models, m) for m in models.all()]


@router.post(
    "/models/{name}/activate",
    summary="Make a loaded version the active one, if it passes the promotion gate or with an override reason "
    "(admin); in-flight requests finish on theirs",
    responses=GATED,
)
async def activate(
    request: Request, who: Admin, models: ModelsDep, release: ReleaseDep, name: str, body: ActivateIn
) -> dict[str, Any]:
    model = _loaded(models, name, body.version)
    request.state.model_version = model.version
    if models.is_active(model):
        return {**_describe(models, model), "gate": None, "reason": "already active"}
    return await _go_live(models, release, model, who.key_id, body.override_reason, "activate")


@router.post(
    "/models/{name}/rollout",
    response_model=RolloutOut,
    summary="Start a canary (a share of requests, by patient) or a shadow (every request, answers never shown) "
    "of a loaded version (admin); a canary must pass the gate or carry an override reason",
    responses={**GATED, 422: {"description": "A fraction outside [0, 1]"}},
)
async def rollout(
    request: Request, who: Admin, models: ModelsDep, release: ReleaseDep, store: StoreDep, name: str, body: RolloutIn
) -> RolloutOut:
    model = _loaded(models, name, body.version)
    request.state.model_version = model.version
    if models.is_active(model):
        raise HTTPException(409, f"{name}@{model.version} is the active version; roll out another one")
    active = _active(models, name)
    if body.mode == "canary":  # a shadow's answers reach nobody: it needs no gate
        reason, gate_json = await release.cleared(model, active, who.key_id, body.override_reason, "a canary")
        reason = f"{body.fraction:.0%} of patients; {reason}"
    else:
        reason, gate_json = "every request, answers stored and never shown", None
    fraction = body.fraction if body.mode == "canary" else 0.0
    with _fresh():
        row = store.start_rollout(
            name, model.version, body.mode, fraction, who.key_id, reason, gate_json, active.version
        )
    gate = json.loads(gate_json) if gate_json else None
    return RolloutOut(
        name=row.name, version=row.version, mode=row.mode, fraction=row.fraction if row.mode == "canary" else None,
        started_by=row.started_by, started_at=as_utc(row.started_at), gate=gate,
    )  # fmt: skip


@router.post(
    "/models/{name}/promote",
    summary="Make the rollout's candidate the active version and end the rollout (admin; the gate, or an override)",
    responses={**GATED, 409: {"description": "No rollout in progress, or the gate refused"}},
)
async def promote(
    request: Request, who: Admin, models: ModelsDep, release: ReleaseDep, name: str, body: PromoteIn
) -> dict[str, Any]:
    served_name(models, name)
    current = models.rollout(name)
    if current is None:
        raise HTTPException(409, f"no rollout of '{name}' is in progress; start a canary or shadow first")
    model = current[1]
    request.state.model_version = model.version
    return await _go_live(models, release, model, who.key_id, body.override_reason, "promote")


@router.post(
    "/models/{name}/rollback",
    response_model=RollbackOut,
    summary="End the rollout in progress, or else activate the previously active version again (admin)",
    responses={404: {"description": "No such model"}, 409: {"description": "Nothing to roll back to"}},
)
def rollback(
    request: Request, who: Admin, models: ModelsDep, store: StoreDep, name: str, body: RollbackIn
) -> RollbackOut:
    served_name(models, name)
    if store.end_rollout(name, who.key_id, body.reason) is not None:
        active = _active(models, name)
        request.state.model_version = active.version
        return RollbackOut(action=ROLLOUT_ENDED, active=active.version)
    active = _active(models, name)
    model = models.versions(name).get(store.rollback_target(name) or "")
    if model is None:
        raise HTTPException(
            409, f"'{name}' has no rollout, and no activation or promotion to undo with a loaded version before it"
        )
    # No gate: the version served before is the known state a rollback exists to return to.
    with _fresh():
        models.activate(model, who.key_id, "rollback", body.reason, None, expected_active=active)
    request.state.model_version = model.version
    return RollbackOut(action="reactivated", active=model.version)


@router.get("/models/{name}/events", response_model=list[EventOut], summary="The governance log, newest first (viewer)")
def events(_who: Viewer, models: ModelsDep, store: StoreDep, name: str) -> list[EventOut]:
    served_name(models, name)
    out = []
    for e in store.events(name):
        gate = json.loads(e.gate_json) if e.gate_json else None
        out.append(
            EventOut(at=as_utc(e.at), action=e.action, version=e.version, previous=e.previous, by=e.by,
                     reason=e.reason, gate=gate)
        )  # fmt: skip
    return out
