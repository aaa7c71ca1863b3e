"""Authentication and authorisation of API requests: signed bearer tokens and one permission check.

Tokens are compact JWS (JWT) strings signed with HMAC-SHA256 (``alg: HS256``), written here with
:mod:`hmac` and :mod:`hashlib`: ``base64url(header).base64url(claims).base64url(signature)``.
Claims: ``sub`` (user name), ``role``, ``iat`` and ``exp`` (Unix seconds), ``jti`` (random id).
The key is :meth:`twin.settings.Settings.resolve_secret_key` (environment or key file, never the
code); changing it logs everyone out. A token lasts a shift (8 h) by default.

On every request the token is verified (signature in constant time, then expiry) and its user
looked up in the current user store: a removed user is logged out at once, and the role used is
the user's role now, not the one written in the token.

Each route declares the one permission it needs with ``Depends(require(Permission.X))``, which
calls :func:`twin.security.check`; a refusal raises
:class:`~models.errors.AuthorisationError`, mapped to 401/403 in :mod:`api.errors`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from models.errors import AuthorisationError, ConflictError, InputError, NotFoundError
from twin.security import Permission, Role, check
from twin.users import User, UserStore, load_user_store, read_users_file, write_users_file

__all__ = [
    "DEFAULT_TOKEN_TTL_S",
    "Principal",
    "TokenSigner",
    "UserDirectory",
    "current_principal",
    "oauth2_scheme",
    "require",
]

DEFAULT_TOKEN_TTL_S: Final = 8 * 3600.0
_HEADER: Final = {"alg": "HS256", "typ": "JWT"}

#: The OAuth2 password flow, for the OpenAPI document ("Authorize" in /docs). Tokens come
#: from ``POST /auth/token``. ``auto_error`` is off: a missing token is the check's business.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Principal:
    """Who is calling: user name and role (``None`` for both when not authenticated)."""

    name: str | None
    role: Role | None
    expires_at: float | None = None

    @property
    def authenticated(self) -> bool:
        """Whether a valid token came with the request."""
        return self.role is not None

    def require(self, permission: Permission) -> str:
        """Check ``permission`` and return the user name (raises ``AuthorisationError``)."""
        check(self.role, permission, user=self.name)
        assert self.name is not None
        return self.name


ANONYMOUS: Final = Principal(None, None)


class TokenSigner:
    """Issues and verifies HS256 tokens.

    Parameters
    ----------
    key
        The signing key (>= 32 characters).
    ttl_s
        Lifetime of a token, seconds.
    clock
        Unix time source (injectable for tests).
    """

    def __init__(self, key: str, *, ttl_s: float = DEFAULT_TOKEN_TTL_S, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 32:
            raise InputError("secret_key: must be at least 32 characters", field="secret_key")
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise InputError(f"token_ttl_s: {ttl_s!r} must be > 0 seconds", field="token_ttl_s")
        self._key = key.encode("utf-8")
        self.ttl_s = ttl_s
        self._clock = clock

    def _sign(self, signing_input: bytes) -> bytes:
        return hmac.new(self._key, signing_input, hashlib.sha256).digest()

    def issue(self, user: str, role: Role) -> tuple[str, float]:
        """A token for ``user`` with ``role``; returns ``(token, expires_at)``."""
        now = self._clock()
        exp = now + self.ttl_s
        claims = {"sub": user, "role": role.value, "iat": int(now), "exp": int(exp), "jti": secrets.token_hex(8)}
        head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{head}.{body}".encode("ascii")
        return f"{head}.{body}.{_b64(self._sign(signing_input))}", float(int(exp))

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token.

        Raises
        ------
        models.errors.AuthorisationError
            Malformed, wrongly signed or expired (``details["authenticated"]`` false: 401).
        """

        def refuse(why: str) -> AuthorisationError:
            return AuthorisationError(f"not authenticated: {why}", field="token", details={"authenticated": False})

        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise refuse("the bearer token is malformed")
        try:
            head_raw, body_raw, sig = (_unb64(p) for p in parts)
            header = json.loads(head_raw)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise refuse("the bearer token is malformed") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise refuse("the bearer token is not HS256")
        expected = self._sign(f"{parts[0]}.{parts[1]}".encode("ascii"))
        if not hmac.compare_digest(expected, sig):
            raise refuse("the bearer token's signature is not valid (signed with another key?)")
        try:
            claims = json.loads(body_raw)
        except (ValueError, UnicodeDecodeError):
            raise refuse("the bearer token is malformed") from None
        if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
            raise refuse("the bearer token has no subject")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or self._clock() >= exp:
            raise refuse("the bearer token has expired; log in again")
        return claims


class UserDirectory:
    """The current user store, reloadable, with the user-management writes (admin only).

    Users come from the users file and ``SXTWIN_USERS`` (:func:`twin.users.load_user_store`);
    management changes the users file only (users defined in the variable are read-only here).
    """

    def __init__(self, users_file: Path | None, users_env: str | None, store: UserStore | None = None) -> None:
        self.users_file = users_file
        self.users_env = users_env
        self._lock = threading.Lock()
        self.store = store if store is not None else load_user_store(users_file, users_env)

    def get(self, name: str) -> User | None:
        """The user called ``name``, or None."""
        return self.store.users.get(name)

    def authenticate(self, name: str, password: str) -> User:
        """Check a password (slow on purpose: scrypt). Raises ``AuthorisationError``."""
        return self.store.authenticate(name, password)

    def _env_names(self) -> set[str]:
        from twin.users import parse_users_env

        return {u.name for u in parse_users_env(self.users_env)} if self.users_env else set()

    def upsert(self, user: User) -> bool:
        """Create or replace a user in the users file; returns True when created."""
        if self.users_file is None:
            raise ConflictError("users_file: no users file is configured", field="users_file")
        with self._lock:
            if user.name in self._env_names():
                raise ConflictError(f"user {user.name!r} is defined in SXTWIN_USERS; change it there", field="name")
            current = read_users_file(self.users_file) if self.users_file.exists() else []
            created = all(u.name != user.name for u in current)
            users = [u for u in current if u.name != user.name] + [user]
            write_users_file(self.users_file, users, overwrite=True)
            self.store = load_user_store(self.users_file, self.users_env)
        return created

    def remove(self, name: str) -> None:
        """Remove a user from the users file."""
        if self.users_file is None or not self.users_file.exists():
            raise NotFoundError(f"user {name!r} does not exist", field="name")
        with self._lock:
            if name in self._env_names():
                raise ConflictError(f"user {name!r} is defined in SXTWIN_USERS; remove it there", field="name")
            current = read_users_file(self.users_file)
            if all(u.name != name for u in current):
                raise NotFoundError(f"user {name!r} does not exist in the users file", field="name")
            write_users_file(self.users_file, [u for u in current if u.name != name], overwrite=True)
            self.store = load_user_store(self.users_file, self.users_env)


def _bearer(request: Request, header_token: str | None) -> str | None:
    if header_token:
        return header_token
    # EventSource (SSE) cannot send headers: the stream accepts the token as a query parameter.
    if request.url.path.endswith("/stream"):
        return request.query_params.get("access_token") or None
    return None


async def current_principal(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
    """The caller, from the bearer token (anonymous when there is none).

    A token that is present but invalid is refused here (401), not treated as anonymous.
    """
    raw = _bearer(request, token)
    if raw is None:
        return ANONYMOUS
    state = request.app.state
    claims = state.signer.verify(raw)
    user = state.users.get(claims["sub"])
    if user is None:
        raise AuthorisationError(
            f"not authenticated: user {claims['sub']!r} no longer exists",
            field="token",
            details={"authenticated": False},
        )
    return Principal(user.name, user.role, float(claims["exp"]))


def require(permission: Permission) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that lets the request through only with ``permission`` (see module doc)."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        check(principal.role, permission, user=principal.name)
        return principal

    dependency.__name__ = f"require_{permission.value}"
    return dependency
