"""Deployment settings: where data lives, which database, which ports, where secrets come from.

Every field is read from an environment variable ``SXTWIN_<FIELD>`` (for example
``SXTWIN_DATA_DIR``, ``SXTWIN_DATABASE_URL``) or passed to :class:`Settings` directly. Nothing is
read or created at import time: build settings with :func:`get_settings` (or ``Settings(...)``)
where they are needed, and pass them on.

=============================  ==============================================================
variable                       meaning (default)
=============================  ==============================================================
``SXTWIN_DATA_DIR``            data directory (``$XDG_DATA_HOME/sxtwin``, else
                               ``~/.local/share/sxtwin``); created with mode 0700 on first use
``SXTWIN_DATABASE_URL``        historian URL (``sqlite:///<data_dir>/historian.sqlite3``);
                               ``postgresql+psycopg://user:password@host:port/db`` for PostgreSQL
``SXTWIN_USERS_FILE``          users file, TOML or JSON (``<data_dir>/users.toml``)
``SXTWIN_USERS``               extra users ``name:role:hash;...`` (see :mod:`twin.users`)
``SXTWIN_SECRET_KEY``          key that signs API tokens; if unset, read from
                               ``<data_dir>/secret_key`` or generated there (mode 0600)
``SXTWIN_HOST``                address the API and OPC UA server bind (``127.0.0.1``)
``SXTWIN_API_PORT``            API port (8000)
``SXTWIN_OPCUA_PORT``          OPC UA port (4840)
``SXTWIN_OPCUA_ALLOW_ANONYMOUS``  expose an anonymous, viewer-only OPC UA endpoint (false;
                               for development only)
``SXTWIN_DASK_SCHEDULER``      Dask scheduler address for studies (unset: a local cluster)
``SXTWIN_SAMPLE_RETENTION_DAYS``  keep historian samples this many days (365)
=============================  ==============================================================
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any, Final

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import InputError

__all__ = ["SECRET_KEY_FILENAME", "Settings", "get_settings"]

log = logging.getLogger(__name__)

SECRET_KEY_FILENAME: Final = "secret_key"  # noqa: S105 - a file name, not a secret
HISTORIAN_FILENAME: Final = "historian.sqlite3"
USERS_FILENAME: Final = "users.toml"
_MIN_SECRET_KEY_CHARS: Final = 32


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/sxtwin``, else ``~/.local/share/sxtwin``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "sxtwin"


class Settings(BaseSettings):
    """Deployment settings of sxtwin (environment prefix ``SXTWIN_``).

    Loopback binding and embedded defaults (SQLite file, local Dask cluster) so that a fresh
    machine runs without configuration; the same code takes a PostgreSQL URL, a scheduler
    address and another bind address.
    """

    model_config = SettingsConfigDict(
        env_prefix="SXTWIN_", frozen=True, extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Data directory: historian file, users file, secret key, OPC UA PKI.",
    )
    database_url: str | None = Field(
        default=None, description="Historian SQLAlchemy URL; None: SQLite file in data_dir."
    )
    users_file: Path | None = Field(
        default=None, description="Users file (TOML/JSON); None: data_dir/users.toml."
    )
    users: SecretStr | None = Field(
        default=None, description="Extra users, 'name:role:hash;...' (SXTWIN_USERS)."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Token-signing key (>= 32 characters); None: data_dir/secret_key.",
    )
    host: str = Field(default="127.0.0.1", description="Bind address of the API and OPC UA.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="API TCP port.")
    opcua_port: int = Field(default=4840, ge=1, le=65535, description="OPC UA TCP port.")
    opcua_allow_anonymous: bool = Field(
        default=False, description="Also expose an anonymous viewer-only OPC UA endpoint (dev)."
    )
    dask_scheduler: str | None = Field(
        default=None, description="Dask scheduler address; None: a local cluster."
    )
    sample_retention_days: float = Field(
        default=365.0, gt=0, description="Historian samples older than this are deleted."
    )

    @field_validator("data_dir", "users_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Resolve once, at construction, so a later chdir does not move the data.
        return None if value is None else value.expanduser().absolute()

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < _MIN_SECRET_KEY_CHARS:
            raise ValueError(f"must be at least {_MIN_SECRET_KEY_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        if self.api_port == self.opcua_port:
            raise ValueError(f"api_port and opcua_port are both {self.api_port}")
        return self

    @property
    def resolved_database_url(self) -> str:
        """``database_url``, or the SQLite file ``data_dir/historian.sqlite3``."""
        return self.database_url or f"sqlite:///{self.data_dir / HISTORIAN_FILENAME}"

    @property
    def resolved_users_file(self) -> Path:
        """``users_file``, or ``data_dir/users.toml``."""
        return self.users_file or self.data_dir / USERS_FILENAME

    @property
    def opcua_pki_dir(self) -> Path:
        """OPC UA certificates: ``own/`` (server cert and key), ``trusted/``, ``rejected/``."""
        return self.data_dir / "pki"

    def ensure_data_dir(self) -> Path:
        """Create ``data_dir`` (mode 0700) if missing and return it."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.data_dir

    def resolve_secret_key(self) -> SecretStr:
        """The token-signing key: ``secret_key``, else ``data_dir/secret_key``, else a new one.

        A new key (``secrets.token_urlsafe(48)``) is written to ``data_dir/secret_key`` with
        mode 0600, exclusively, so concurrent first starts agree on one key.

        Raises
        ------
        models.errors.InputError
            The key file exists but is shorter than 32 characters.
        """
        if self.secret_key is not None:
            return self.secret_key
        path = self.ensure_data_dir() / SECRET_KEY_FILENAME
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_text(encoding="utf-8").strip()
            if len(key) < _MIN_SECRET_KEY_CHARS:
                raise InputError(
                    f"secret_key: {path} holds {len(key)} characters; expected at least "
                    f"{_MIN_SECRET_KEY_CHARS} (delete it to generate a new key)",
                    field="secret_key",
                ) from None
            return SecretStr(key)
        key = secrets.token_urlsafe(48)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(key + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        log.info("generated a new secret key in %s", path)
        return SecretStr(key)


def get_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment, with ``overrides`` taking precedence.

    Raises
    ------
    models.errors.InputError
        A bad value; the message names the variable (``SXTWIN_API_PORT``), the value and
        what is allowed.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        if not name:  # a check across fields
            raise InputError(f"settings: {err['msg']}", field="settings") from None
        variable = f"SXTWIN_{name.upper()}"
        value = err.get("input")
        shown = "<hidden>" if name in {"secret_key", "users"} else repr(value)
        raise InputError(
            f"{variable}: {shown} is not allowed; {err['msg']}",
            field=name,
            details={"errors": len(exc.errors())},
        ) from None
