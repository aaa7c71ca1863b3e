"""Users, password hashes and demo credentials (authentication; roles are in :mod:`twin.security`).

Passwords are never stored: a users file or variable holds scrypt hashes in the self-describing
form ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash in unpadded URL-safe base64; the default
cost n=2**14, r=8, p=5 is Django's). Verification recomputes the hash with the stored parameters
and compares in constant time.

Sources of users (both optional, both read by :func:`load_user_store`; a name in both is an
error, so neither silently shadows the other):

- a **users file**, TOML (``.toml``) or JSON (``.json``)::

      # TOML
      [users.alice]
      role = "operator"
      password_hash = "scrypt$16384$8$5$...$..."

      // JSON
      {"users": {"alice": {"role": "operator", "password_hash": "scrypt$16384$8$5$...$..."}}}

- the environment variable ``SXTWIN_USERS``: entries ``name:role:hash`` separated by ``;``
  (quote it in a shell: the hash contains ``$``)::

      SXTWIN_USERS='alice:operator:scrypt$16384$8$5$...;bob:viewer:scrypt$16384$8$5$...'

User names are 1-64 characters from ``A-Z a-z 0-9 . _ -``. Hash a password with
``python -c 'import getpass, twin.users as u; print(u.hash_password(getpass.getpass()))'``.

:func:`generate_demo_users` writes a users file with one user per role (the user is named after
its role) and random passwords, and returns the clear-text passwords exactly once.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from models.errors import AuthorisationError, ConflictError, InputError, NotFoundError, bad_value
from twin.security import Permission, Role, has_permission, parse_role

__all__ = [
    "DEMO_USERS_FILENAME",
    "DemoCredential",
    "DemoUsers",
    "User",
    "UserStore",
    "generate_demo_users",
    "hash_password",
    "load_user_store",
    "parse_users_env",
    "read_users_file",
    "verify_password",
    "write_users_file",
]

log = logging.getLogger(__name__)

DEMO_USERS_FILENAME: Final = "users.toml"

_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 5
_SALT_BYTES: Final = 16
_KEY_BYTES: Final = 32
_MAX_SCRYPT_N_TIMES_R: Final = 2**21  # scrypt needs 128*n*r bytes
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HASH_RE: Final = re.compile(r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+")
_MIN_PASSWORD_CHARS: Final = 8


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int = _KEY_BYTES) -> bytes:
    # maxmem: scrypt needs about 128*n*r bytes; allow twice that.
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=dklen,
        maxmem=256 * n * r + 1024 * 1024,
    )


def hash_password(password: str) -> str:
    """Hash ``password`` with scrypt and a fresh random salt.

    Returns
    -------
    str
        ``scrypt$<n>$<r>$<p>$<salt>$<hash>``, safe to store in a users file or variable.

    Raises
    ------
    models.errors.InputError
        A password shorter than 8 characters.
    """
    if len(password) < _MIN_PASSWORD_CHARS:
        raise InputError(
            f"password: too short ({len(password)} characters); expected at least "
            f"{_MIN_PASSWORD_CHARS}",
            field="password",
        )
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64encode(salt)}${_b64encode(key)}"


def _parse_hash(password_hash: str, field: str) -> tuple[int, int, int, bytes, bytes]:
    if not _HASH_RE.fullmatch(password_hash):
        raise bad_value(field, password_hash[:16] + "...", "a hash 'scrypt$n$r$p$salt$hash'")
    _, n_text, r_text, p_text, salt_text, key_text = password_hash.split("$")
    n, r, p = int(n_text), int(r_text), int(p_text)
    if (
        n < 2
        or n & (n - 1)
        or not 1 <= r <= 64
        or not 1 <= p <= 64
        or n * r > _MAX_SCRYPT_N_TIMES_R
    ):
        raise bad_value(
            field,
            f"n={n}, r={r}, p={p}",
            "n a power of 2, 1 <= r, p <= 64, n*r <= 2**21 (256 MiB of memory)",
        )
    try:
        salt, key = _b64decode(salt_text), _b64decode(key_text)
    except (binascii.Error, ValueError):
        raise bad_value(field, "salt/hash", "unpadded URL-safe base64") from None
    return n, r, p, salt, key


def verify_password(password: str, password_hash: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (constant-time comparison).

    Raises
    ------
    models.errors.InputError
        ``password_hash`` is not a hash made by :func:`hash_password`.
    """
    n, r, p, salt, key = _parse_hash(password_hash, "password_hash")
    candidate = _scrypt(password, salt, n, r, p, dklen=len(key))
    return hmac.compare_digest(candidate, key)


@dataclass(frozen=True)
class User:
    """A user: name, role and password hash (never the password).

    Attributes
    ----------
    name
        1-64 characters from ``A-Z a-z 0-9 . _ -``.
    role
        The user's one role.
    password_hash
        ``scrypt$...`` as made by :func:`hash_password`.
    """

    name: str
    role: Role
    password_hash: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise bad_value("name", self.name, "1-64 characters from A-Z a-z 0-9 . _ -")
        object.__setattr__(self, "role", parse_role(self.role, field=f"users.{self.name}.role"))
        _parse_hash(self.password_hash, f"users.{self.name}.password_hash")

    def can(self, permission: Permission) -> bool:
        """Whether this user's role holds ``permission``."""
        return has_permission(self.role, permission)


@functools.cache
def _dummy_hash() -> str:
    # Verified against when the user name is unknown, so that a wrong name and a wrong
    # password take the same time. Made on first use: importing must stay cheap.
    return hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class UserStore:
    """An immutable set of users, looked up by name.

    Build one with :func:`load_user_store` (deployment) or :meth:`from_users` (tests, tools).
    """

    users: Mapping[str, User]

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))

    @classmethod
    def from_users(cls, users: Iterable[User]) -> UserStore:
        """A store of ``users``; a repeated name is an :class:`~models.errors.InputError`."""
        by_name: dict[str, User] = {}
        for user in users:
            if user.name in by_name:
                raise InputError(f"users: user {user.name!r} is defined twice", field="users")
            by_name[user.name] = user
        return cls(by_name)

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator[User]:
        return iter(self.users.values())

    def __contains__(self, name: object) -> bool:
        return name in self.users

    def get(self, name: str) -> User:
        """The user called ``name``.

        Raises
        ------
        models.errors.NotFoundError
            No such user.
        """
        try:
            return self.users[name]
        except KeyError:
            raise NotFoundError(f"user {name!r} does not exist", field="name") from None

    def authenticate(self, name: str, password: str) -> User:
        """The user ``name`` if ``password`` is right.

        Raises
        ------
        models.errors.AuthorisationError
            Unknown user or wrong password (one message for both, and the same time taken,
            so that a caller cannot learn which names exist).
        """
        user = self.users.get(name)
        ok = verify_password(password, user.password_hash if user else _dummy_hash())
        if user is None or not ok:
            log.info("authentication failed for user %r", name)
            raise AuthorisationError(
                "authentication failed: unknown user or wrong password",
                details={"authenticated": False},
            )
        return user


def _users_from_mapping(data: Any, source: str) -> list[User]:
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise InputError(
            f"{source}: expected a table 'users' mapping each user name to role and password_hash",
            field="users",
        )
    out = []
    for name, entry in users.items():
        if not isinstance(entry, dict):
            raise bad_value(f"users.{name}", entry, "a table with role and password_hash")
        unknown = set(entry) - {"role", "password_hash"}
        if unknown:
            raise bad_value(f"users.{name}", sorted(unknown), "only keys role, password_hash")
        for key in ("role", "password_hash"):
            if not isinstance(entry.get(key), str):
                raise InputError(
                    f"{source}: users.{name}.{key} is missing or not a string",
                    field=f"users.{name}.{key}",
                )
        out.append(
            User(
                name, parse_role(entry["role"], field=f"users.{name}.role"), entry["password_hash"]
            )
        )
    return out


def read_users_file(path: Path) -> list[User]:
    """Read the users of a TOML (``.toml``) or JSON (``.json``) users file.

    Raises
    ------
    models.errors.InputError
        The file is missing, not valid TOML/JSON, or an entry is malformed (unknown role,
        bad name, a value that is not a hash); the message names the field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(
            f"users_file: cannot read {path}: {exc.strerror}", field="users_file"
        ) from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise bad_value("users_file", str(path), "a file ending in .toml or .json")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"users_file: {path} is malformed: {exc}", field="users_file") from None
    return _users_from_mapping(data, str(path))


def parse_users_env(text: str) -> list[User]:
    """Parse ``SXTWIN_USERS``: ``name:role:hash`` entries separated by ``;`` (blanks ignored).

    Raises
    ------
    models.errors.InputError
        An entry without exactly three ``:``-separated parts, an unknown role or a bad hash.
    """
    out = []
    for i, entry in enumerate(e.strip() for e in text.split(";")):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3:
            raise bad_value(f"SXTWIN_USERS[{i}]", entry[:40], "name:role:hash")
        name, role, password_hash = (p.strip() for p in parts)
        out.append(User(name, parse_role(role, field=f"SXTWIN_USERS[{i}].role"), password_hash))
    return out


def load_user_store(users_file: Path | None = None, users_env: str | None = None) -> UserStore:
    """The users of ``users_file`` (if it exists) and of ``users_env`` (``SXTWIN_USERS`` text).

    With neither, the store is empty and nobody can log in (an anonymous OPC UA endpoint, if
    switched on, still gives viewer access). Deployment code passes
    ``settings.resolved_users_file`` and ``settings.users`` (see :mod:`twin.settings`).

    Raises
    ------
    models.errors.InputError
        A malformed file or variable, or a name defined in both.
    """
    from_file = read_users_file(users_file) if users_file and Path(users_file).exists() else []
    from_env = parse_users_env(users_env) if users_env else []
    clash = {u.name for u in from_file} & {u.name for u in from_env}
    if clash:
        raise InputError(
            f"users: {sorted(clash)} defined both in the users file and in SXTWIN_USERS; "
            "define each user in one place",
            field="users",
        )
    store = UserStore.from_users([*from_file, *from_env])
    log.info(
        "loaded %d users (%d from file, %d from SXTWIN_USERS)",
        len(store),
        len(from_file),
        len(from_env),
    )
    return store


def _users_toml(users: Iterable[User]) -> str:
    lines = [
        "# sxtwin users: role and scrypt password hash per user; no clear-text passwords.",
        "# Format: docs/security.md. Hash a password with twin.users.hash_password.",
    ]
    for user in users:
        # Names and hashes are restricted to characters that need no escaping in TOML.
        lines += [
            "",
            f'[users."{user.name}"]',
            f'role = "{user.role.value}"',
            f'password_hash = "{user.password_hash}"',
        ]
    return "\n".join(lines) + "\n"


def write_users_file(path: Path, users: Iterable[User], *, overwrite: bool = False) -> Path:
    """Write ``users`` to a TOML users file with mode 0600, atomically.

    The file appears complete or not at all (written to a temporary file, synced, then linked
    into place). Without ``overwrite`` an existing file is left alone.

    Raises
    ------
    models.errors.ConflictError
        The file exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.suffix != ".toml":
        raise bad_value("users_file", str(path), "a file ending in .toml")
    text = _users_toml(users)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ConflictError(
                    f"users_file: {path} exists; not overwritten", field="users_file"
                ) from None
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


@dataclass(frozen=True)
class DemoCredential:
    """One demo user's name, role and clear-text password (shown once, never stored)."""

    name: str
    role: Role
    password: str = field(repr=False)


@dataclass(frozen=True)
class DemoUsers:
    """The result of :func:`generate_demo_users`.

    Attributes
    ----------
    path
        The users file.
    created
        True when this call created the file; ``credentials`` then holds the passwords.
    credentials
        One :class:`DemoCredential` per role when ``created``; empty otherwise (the file holds
        hashes only, so the passwords cannot be shown again).
    message
        A sentence for the person starting sxtwin.
    """

    path: Path
    created: bool
    credentials: tuple[DemoCredential, ...]
    message: str


def generate_demo_users(data_dir: Path, filename: str = DEMO_USERS_FILENAME) -> DemoUsers:
    """Create demo users (one per role, named after it) with random passwords, once.

    Writes ``data_dir/filename`` (hashes only, mode 0600) and returns the clear-text
    passwords. When the file already exists nothing is written and no passwords are returned
    (``created`` is false and ``message`` says how to get new ones).
    """
    data_dir = Path(data_dir)
    path = data_dir / filename
    if path.exists():
        return DemoUsers(
            path=path,
            created=False,
            credentials=(),
            message=(
                f"users file {path} exists; its passwords are stored as hashes only and cannot "
                "be shown again (delete the file to generate new demo users)"
            ),
        )
    credentials = tuple(DemoCredential(r.value, r, secrets.token_urlsafe(12)) for r in Role)
    users = [User(c.name, c.role, hash_password(c.password)) for c in credentials]
    try:
        write_users_file(path, users)
    except ConflictError:  # another process created it between the check and the link
        return generate_demo_users(data_dir, filename)
    log.info("generated %d demo users in %s", len(users), path)
    return DemoUsers(
        path=path,
        created=True,
        credentials=credentials,
        message=(
            f"generated demo users in {path} (hashes only); the passwords below are shown once"
        ),
    )
