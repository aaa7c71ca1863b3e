"""User management (admin): list, create or replace, remove; audited."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from api.auth import Principal, UserDirectory, require
from api.deps import RuntimeDep
from api.schemas.common import Problem, ProblemResponses
from api.schemas.users import UserIn, UserOut
from twin.security import Permission, parse_role
from twin.users import User, hash_password

__all__ = ["router"]

router = APIRouter(prefix="/api/users", tags=["users"], responses=ProblemResponses)

UserName = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="1-64 of A-Z a-z 0-9 . _ -")]


def _directory(request: Request) -> UserDirectory:
    users: UserDirectory = request.app.state.users
    return users


@router.get("", response_model=list[UserOut], summary="Users and their roles (admin)")
async def list_users(
    request: Request, _: Annotated[Principal, Depends(require(Permission.MANAGE_USERS))]
) -> list[UserOut]:
    d = _directory(request)
    env = d._env_names()
    return [
        UserOut(name=u.name, role=u.role.value, source="SXTWIN_USERS" if u.name in env else "users_file")
        for u in sorted(d.store, key=lambda u: u.name)
    ]


@router.put(
    "/{name}",
    response_model=UserOut,
    summary="Create or replace a user of the users file (admin), audited",
    responses={409: {"model": Problem, "description": "The user is defined in SXTWIN_USERS."}},
)
async def put_user(
    request: Request,
    runtime: RuntimeDep,
    admin: Annotated[Principal, Depends(require(Permission.MANAGE_USERS))],
    name: UserName,
    body: UserIn,
) -> UserOut:
    assert admin.name is not None
    user = User(name, parse_role(body.role), await asyncio.to_thread(hash_password, body.password))
    created = await asyncio.to_thread(_directory(request).upsert, user)
    await asyncio.to_thread(
        runtime.historian.audit,
        admin.name,
        "users.create" if created else "users.update",
        target=f"user:{name}",
        details={"role": body.role},
    )
    return UserOut(name=name, role=body.role, source="users_file")


@router.delete(
    "/{name}",
    status_code=204,
    summary="Remove a user of the users file (admin), audited",
    responses={
        404: {"model": Problem, "description": "No such user in the users file."},
        409: {"model": Problem, "description": "The user is defined in SXTWIN_USERS."},
    },
)
async def delete_user(
    request: Request,
    runtime: RuntimeDep,
    admin: Annotated[Principal, Depends(require(Permission.MANAGE_USERS))],
    name: UserName,
) -> Response:
    assert admin.name is not None
    await asyncio.to_thread(_directory(request).remove, name)
    await asyncio.to_thread(runtime.historian.audit, admin.name, "users.remove", target=f"user:{name}")
    return Response(status_code=204)
