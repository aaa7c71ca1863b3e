"""Log in (OAuth2 password flow) and who am I."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from api.auth import Principal, require
from api.schemas.auth import Me, Token
from api.schemas.common import ProblemResponses
from twin.security import PERMISSIONS, Permission

__all__ = ["router"]

router = APIRouter(tags=["auth"])


async def _login(request: Request, form: OAuth2PasswordRequestForm) -> Token:
    users = request.app.state.users
    # scrypt is slow on purpose: verify in a worker thread, not on the event loop
    user = await asyncio.to_thread(users.authenticate, form.username, form.password)
    token, exp = request.app.state.signer.issue(user.name, user.role)
    return Token(access_token=token, expires_at=exp, user=user.name, role=user.role.value)


@router.post(
    "/auth/token",
    response_model=Token,
    summary="Log in: user name and password (form) give a bearer token",
    responses={401: ProblemResponses[401], 422: ProblemResponses[422]},
)
async def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    return await _login(request, form)


@router.post("/api/token", response_model=Token, include_in_schema=False)
async def token_alias(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    """The same as ``/auth/token`` (the path docs/security.md names)."""
    return await _login(request, form)


@router.get("/auth/me", response_model=Me, summary="The caller: user, role and permissions", responses=ProblemResponses)
async def me(principal: Annotated[Principal, Depends(require(Permission.READ_STATE))]) -> Me:
    assert principal.role is not None
    assert principal.name is not None
    perms = sorted(p.value for p in PERMISSIONS[principal.role])
    return Me(user=principal.name, role=principal.role.value, permissions=perms, expires_at=principal.expires_at)
