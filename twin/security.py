"""Roles, permissions and the one permission table, shared by the OPC UA server and the API.

Authorisation in sxtwin is a lookup in :data:`PERMISSIONS`, a mapping from :class:`Role` to the
frozen set of :class:`Permission` that the role holds. The OPC UA server and the control-room API
both call :func:`check` with the caller's role; neither keeps a table of its own. The table is
rendered into ``docs/security.md`` by :func:`permission_table_markdown` and a test fails when
the two differ.

Roles
-----
The plant roles form a chain, each holding every permission of the one before:

    viewer < operator < engineer < admin

``trainer`` stands beside the chain: it is a *viewer* that may also read the simulated plant's
true state (the unmeasured stage compositions the twin has to estimate) and run the simulated
plant (load scenarios, pause, change speed, reset). It may not write setpoints: a trainee logs in
as an operator. ``admin`` holds every permission, so it also holds every trainer permission.
A user has exactly one role; a person who needs two gets two accounts.

Authentication (users, password hashes, demo credentials) lives in :mod:`twin.users`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from models.errors import AuthorisationError, bad_value

__all__ = [
    "PERMISSIONS",
    "PERMISSION_DESCRIPTIONS",
    "PLANT_ROLE_CHAIN",
    "Permission",
    "Role",
    "allowed_roles",
    "check",
    "has_permission",
    "parse_role",
    "permission_table_markdown",
]

log = logging.getLogger(__name__)


class Role(StrEnum):
    """The role of an authenticated user (or of an anonymous OPC UA session: viewer).

    The string value is what users files, environment variables, OPC UA and the API use.
    """

    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    TRAINER = "trainer"
    ADMIN = "admin"

    def includes(self, other: Role) -> bool:
        """Whether this role holds every permission of ``other`` (by the table).

        ``Role.OPERATOR.includes(Role.VIEWER)`` is true; ``Role.OPERATOR.includes(Role.TRAINER)``
        is false; ``Role.ADMIN`` includes every role.
        """
        return PERMISSIONS[self] >= PERMISSIONS[other]


#: The ordered plant roles; each holds every permission of the ones before it.
PLANT_ROLE_CHAIN: Final[tuple[Role, ...]] = (
    Role.VIEWER,
    Role.OPERATOR,
    Role.ENGINEER,
    Role.ADMIN,
)


class Permission(StrEnum):
    """An action that needs authorisation. See :data:`PERMISSION_DESCRIPTIONS`."""

    READ_STATE = "read_state"
    READ_HISTORY = "read_history"
    READ_TRUE_STATE = "read_true_state"
    WRITE_SETPOINT = "write_setpoint"
    APPROVE_PROPOSAL = "approve_proposal"
    ENABLE_CLOSED_LOOP = "enable_closed_loop"
    ENTER_LAB_ASSAY = "enter_lab_assay"
    ACKNOWLEDGE_ALARM = "acknowledge_alarm"
    RUN_WHAT_IF = "run_what_if"
    SUBMIT_STUDY = "submit_study"
    CANCEL_STUDY = "cancel_study"
    CONFIGURE_TWIN = "configure_twin"
    MANAGE_SCENARIOS = "manage_scenarios"
    READ_AUDIT = "read_audit"
    MANAGE_USERS = "manage_users"


#: What each permission allows, as a sentence for ``docs/security.md`` and error messages.
PERMISSION_DESCRIPTIONS: Final[Mapping[Permission, str]] = MappingProxyType(
    {
        Permission.READ_STATE: "read live measurements, estimates, proposals, alarms and mode",
        Permission.READ_HISTORY: "read the historian: trends, past proposals, decisions, writes",
        Permission.READ_TRUE_STATE: "read the simulated plant's true (unmeasured) state",
        Permission.WRITE_SETPOINT: "write a setpoint (OPC UA `*.SP` or API)",
        Permission.APPROVE_PROPOSAL: "approve or reject a setpoint proposal",
        Permission.ENABLE_CLOSED_LOOP: "switch between advisory and closed-loop mode",
        Permission.ENTER_LAB_ASSAY: "enter a lab assay result",
        Permission.ACKNOWLEDGE_ALARM: "acknowledge an alarm or event",
        Permission.RUN_WHAT_IF: "run a what-if simulation from the current estimate",
        Permission.SUBMIT_STUDY: "submit an offline setpoint study",
        Permission.CANCEL_STUDY: "cancel a running study",
        Permission.CONFIGURE_TWIN: "change constraints, move limits, parameter sets, the spec",
        Permission.MANAGE_SCENARIOS: "load scenarios, pause, set speed, reset the simulated plant",
        Permission.READ_AUDIT: "read the audit log",
        Permission.MANAGE_USERS: "create, change and remove users",
    }
)

_VIEWER: Final = frozenset({Permission.READ_STATE, Permission.READ_HISTORY})
_OPERATOR: Final = _VIEWER | {
    Permission.WRITE_SETPOINT,
    Permission.APPROVE_PROPOSAL,
    Permission.ENABLE_CLOSED_LOOP,
    Permission.ENTER_LAB_ASSAY,
    Permission.ACKNOWLEDGE_ALARM,
    Permission.RUN_WHAT_IF,
}
_ENGINEER: Final = _OPERATOR | {
    Permission.SUBMIT_STUDY,
    Permission.CANCEL_STUDY,
    Permission.CONFIGURE_TWIN,
    Permission.READ_AUDIT,
}
_TRAINER: Final = _VIEWER | {Permission.READ_TRUE_STATE, Permission.MANAGE_SCENARIOS}

#: THE permission table: the only place that says which role may do what.
PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = MappingProxyType(
    {
        Role.VIEWER: _VIEWER,
        Role.OPERATOR: _OPERATOR,
        Role.ENGINEER: _ENGINEER,
        Role.TRAINER: _TRAINER,
        Role.ADMIN: frozenset(Permission),
    }
)


def parse_role(value: str | Role, *, field: str = "role") -> Role:
    """Turn a role name (case-insensitive, surrounding blanks ignored) into a :class:`Role`.

    Raises
    ------
    models.errors.InputError
        Unknown role; the message names ``field`` and the allowed roles.
    """
    if isinstance(value, Role):
        return value
    try:
        return Role(str(value).strip().lower())
    except ValueError:
        raise bad_value(field, value, [r.value for r in Role]) from None


def has_permission(role: Role | None, permission: Permission) -> bool:
    """Whether ``role`` holds ``permission``; ``None`` (not authenticated) holds nothing."""
    return role is not None and permission in PERMISSIONS[role]


def allowed_roles(permission: Permission) -> tuple[Role, ...]:
    """The roles that hold ``permission``, in :class:`Role` order."""
    return tuple(r for r in Role if permission in PERMISSIONS[r])


def check(role: Role | None, permission: Permission, *, user: str | None = None) -> None:
    """Raise unless ``role`` holds ``permission``.

    Parameters
    ----------
    role
        The caller's role, or ``None`` when the caller is not authenticated.
    permission
        The action being attempted.
    user
        The caller's user name, for the message and the log (optional).

    Raises
    ------
    models.errors.AuthorisationError
        Not authenticated (``details["authenticated"]`` is false: HTTP 401), or the role does not
        hold the permission (HTTP 403). ``details`` names the permission and the allowed roles.
    """
    if has_permission(role, permission):
        return
    allowed = allowed_roles(permission)
    allowed_text = ", ".join(r.value for r in allowed)
    details = {
        "permission": permission.value,
        "role": None if role is None else role.value,
        "user": user,
        "allowed_roles": [r.value for r in allowed],
        "authenticated": role is not None,
    }
    who = f"user {user!r} " if user else ""
    if role is None:
        message = (
            f"not authenticated: {permission.value} needs a user with one of the roles "
            f"{allowed_text}"
        )
    else:
        message = (
            f"{who}role {role.value!r} may not {permission.value}; allowed roles: {allowed_text}"
        )
    log.info("authorisation refused: %s", message)
    raise AuthorisationError(message, field="role", details=details)


def permission_table_markdown() -> str:
    """The permission table as a Markdown table (permissions × roles), for ``docs/security.md``.

    The docs embed exactly this text between ``<!-- permission-table:begin -->`` and
    ``<!-- permission-table:end -->``; a test compares them.
    """
    roles = list(Role)
    header = "| permission | what it allows | " + " | ".join(r.value for r in roles) + " |"
    rule = "| --- | --- | " + " | ".join(":---:" for _ in roles) + " |"
    lines = [header, rule]
    for p in Permission:
        marks = " | ".join("yes" if p in PERMISSIONS[r] else "-" for r in roles)
        lines.append(f"| `{p.value}` | {PERMISSION_DESCRIPTIONS[p]} | {marks} |")
    return "\n".join(lines) + "\n"
