"""GET /v1/me: who a key is, so a client can sign in with it and show only what its role may do."""

from __future__ import annotations

from fastapi import APIRouter

from cnnlab.explain.cam import METHODS
from cnnlab.serve.deps import Viewer
from cnnlab.serve.schemas import MeOut
from cnnlab.serve.security import ROLE_NAMES

router = APIRouter(prefix="/v1", tags=["account"])


@router.get("/me", response_model=MeOut, summary="The calling key's id, name, role and expiry (any valid key)")
def me(who: Viewer) -> MeOut:
    return MeOut(
        key_id=who.key_id,
        name=who.name,
        role=who.role.name,
        roles=list(ROLE_NAMES),
        expires_at=who.expires_at,
        explain_methods=list(METHODS),
    )
