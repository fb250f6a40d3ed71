"""GET /v1/me: who a key is, so a client can sign in with it and show only what its role may do."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from cnnlab.explain.cam import METHODS
from cnnlab.serve.security import ROLE_NAMES, Viewer

router = APIRouter(prefix="/v1", tags=["account"])


class MeOut(BaseModel):
    key_id: str
    name: str
    role: str
    roles: list[str]
    """Every role, least first: the key may do what its role and those before it may."""
    expires_at: datetime | None
    explain_methods: list[str]
    """The CAM methods predict and explanation accept (clients offer these, never a list of their own)."""


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
