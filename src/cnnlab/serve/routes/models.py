"""The loaded models, and switching the active version of one (rollback is activating the previous)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from cnnlab.serve.deps import Admin, ModelsDep, Viewer
from cnnlab.serve.schemas import ActivateIn

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", summary="Every loaded model version, and which is active (viewer)")
def list_models(_who: Viewer, models: ModelsDep) -> list[dict[str, Any]]:
    return [m.describe(models.is_active(m)) for m in models.all()]


@router.post(
    "/models/{name}/activate",
    summary="Make a loaded version the active one for its name (admin); in-flight requests finish on theirs",
    responses={404: {"description": "No such model name or version"}},
)
def activate(request: Request, who: Admin, models: ModelsDep, name: str, body: ActivateIn) -> dict[str, Any]:
    if not models.versions(name):
        raise HTTPException(404, f"no model named '{name}' is served")
    model = models.activate(name, body.version, who.key_id)
    if model is None:
        raise HTTPException(404, f"model '{name}' has no loaded version '{body.version}'")
    request.state.model_version = model.version
    return model.describe(True)
