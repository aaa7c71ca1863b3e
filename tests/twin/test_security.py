"""Roles and the one permission table (twin.security): who may do what, the error for those who
may not, and the table in docs/security.md equal to the one in the code."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from models.errors import AuthorisationError, InputError
from twin.security import (
    PERMISSION_DESCRIPTIONS,
    PERMISSIONS,
    PLANT_ROLE_CHAIN,
    Permission,
    Role,
    allowed_roles,
    check,
    has_permission,
    parse_role,
    permission_table_markdown,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
BEGIN = "<!-- permission-table:begin -->"
END = "<!-- permission-table:end -->"


@pytest.mark.parametrize("permission", [Permission.WRITE_SETPOINT, Permission.APPROVE_PROPOSAL])
def test_viewer_cannot_write_setpoints_or_approve(permission: Permission) -> None:
    with pytest.raises(AuthorisationError) as info:
        check(Role.VIEWER, permission, user="vera")
    err = info.value
    assert f"role 'viewer' may not {permission.value}" in err.message
    assert "user 'vera'" in err.message
    assert err.details["allowed_roles"] == ["operator", "engineer", "admin"]
    assert err.details["authenticated"] is True


def test_operator_writes_setpoints_approves_and_acknowledges() -> None:
    for permission in (
        Permission.WRITE_SETPOINT,
        Permission.APPROVE_PROPOSAL,
        Permission.ENABLE_CLOSED_LOOP,
        Permission.ACKNOWLEDGE_ALARM,
        Permission.ENTER_LAB_ASSAY,
    ):
        check(Role.OPERATOR, permission)  # does not raise


def test_operator_cannot_manage_users_nor_read_true_state() -> None:
    with pytest.raises(AuthorisationError, match="may not manage_users; allowed roles: admin"):
        check(Role.OPERATOR, Permission.MANAGE_USERS)
    with pytest.raises(AuthorisationError, match="may not read_true_state"):
        check(Role.OPERATOR, Permission.READ_TRUE_STATE)
    assert not has_permission(Role.ENGINEER, Permission.READ_TRUE_STATE)


def test_trainer_reads_true_state_and_runs_scenarios_but_cannot_write() -> None:
    check(Role.TRAINER, Permission.READ_TRUE_STATE)
    check(Role.TRAINER, Permission.MANAGE_SCENARIOS)
    check(Role.TRAINER, Permission.READ_STATE)
    with pytest.raises(AuthorisationError):
        check(Role.TRAINER, Permission.WRITE_SETPOINT)
    assert allowed_roles(Permission.READ_TRUE_STATE) == (Role.TRAINER, Role.ADMIN)


def test_unauthenticated_caller_is_told_so() -> None:
    with pytest.raises(AuthorisationError, match="not authenticated") as info:
        check(None, Permission.READ_STATE)
    assert info.value.details["authenticated"] is False
    assert not has_permission(None, Permission.READ_STATE)


def test_plant_roles_form_a_chain_and_trainer_stands_beside_it() -> None:
    for lower, higher in itertools.pairwise(PLANT_ROLE_CHAIN):
        assert PERMISSIONS[lower] < PERMISSIONS[higher], (lower, higher)
        assert higher.includes(lower)
        assert not lower.includes(higher)
    assert PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    assert Role.TRAINER.includes(Role.VIEWER)
    assert Role.ADMIN.includes(Role.TRAINER)
    for role in (Role.OPERATOR, Role.ENGINEER):
        assert not role.includes(Role.TRAINER)
        assert not Role.TRAINER.includes(role)
    assert set(PERMISSIONS) == set(Role)


def test_every_permission_is_described_and_held_by_someone() -> None:
    assert set(PERMISSION_DESCRIPTIONS) == set(Permission)
    for permission in Permission:
        assert allowed_roles(permission), permission


def test_parse_role_accepts_names_and_names_the_field_on_error() -> None:
    assert parse_role(" Operator ") is Role.OPERATOR
    assert parse_role(Role.ADMIN) is Role.ADMIN
    with pytest.raises(InputError) as info:
        parse_role("superuser", field="users.bob.role")
    assert info.value.field == "users.bob.role"
    assert "'superuser'" in info.value.message
    assert "viewer, operator, engineer, trainer, admin" in info.value.message


def _docs_table() -> str:
    text = DOCS.read_text(encoding="utf-8")
    assert BEGIN in text, f"{DOCS} lacks {BEGIN}"
    assert END in text, f"{DOCS} lacks {END}"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def test_docs_permission_table_is_the_code_table() -> None:
    table = _docs_table()
    # Parse the docs table on its own, so a drift is reported as a difference in meaning...
    lines = table.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    roles = [Role(c) for c in header[2:]]
    documented = {role: set() for role in roles}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)`", cells[0])
        assert name, line
        for role, mark in zip(roles, cells[2:], strict=True):
            if mark == "yes":
                documented[role].add(Permission(name.group(1)))
    assert {r: frozenset(p) for r, p in documented.items()} == dict(PERMISSIONS)
    # ...and then as text: regenerate docs/security.md with permission_table_markdown().
    assert table == permission_table_markdown()
