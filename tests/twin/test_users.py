"""Users and passwords (twin.users): scrypt hashes, users files and SXTWIN_USERS, authentication,
and demo credentials generated once into a 0600 file of hashes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from models.errors import AuthorisationError, ConflictError, InputError, NotFoundError
from twin.security import Permission, Role
from twin.users import (
    User,
    UserStore,
    generate_demo_users,
    hash_password,
    load_user_store,
    parse_users_env,
    read_users_file,
    verify_password,
    write_users_file,
)


@pytest.fixture(scope="module")
def alice_hash() -> str:
    return hash_password("correct horse battery")


def test_hash_verifies_the_right_password_only(alice_hash: str) -> None:
    assert alice_hash.startswith("scrypt$16384$8$5$")
    assert verify_password("correct horse battery", alice_hash)
    assert not verify_password("correct horse battery!", alice_hash)
    assert not verify_password("", alice_hash)


def test_hash_is_salted(alice_hash: str) -> None:
    again = hash_password("correct horse battery")
    assert again != alice_hash
    assert verify_password("correct horse battery", again)


def test_short_password_and_malformed_hash_are_refused() -> None:
    with pytest.raises(InputError, match="at least 8") as info:
        hash_password("short")
    assert info.value.field == "password"
    with pytest.raises(InputError) as info:
        verify_password("whatever", "md5$abc")
    assert info.value.field == "password_hash"
    with pytest.raises(InputError, match="power of 2"):
        verify_password("whatever", "scrypt$1000$8$1$c2FsdA$a2V5")


def test_store_authenticates_and_hides_which_part_was_wrong(alice_hash: str) -> None:
    store = UserStore.from_users([User("alice", Role.OPERATOR, alice_hash)])
    user = store.authenticate("alice", "correct horse battery")
    assert user.role is Role.OPERATOR
    assert user.can(Permission.WRITE_SETPOINT)
    with pytest.raises(AuthorisationError) as wrong_password:
        store.authenticate("alice", "wrong password")
    with pytest.raises(AuthorisationError) as unknown_user:
        store.authenticate("mallory", "correct horse battery")
    assert wrong_password.value.message == unknown_user.value.message
    with pytest.raises(NotFoundError):
        store.get("mallory")
    assert "alice" in store
    assert len(store) == 1
    assert alice_hash not in repr(user)


def test_users_file_toml_and_json(tmp_path: Path, alice_hash: str) -> None:
    toml = tmp_path / "users.toml"
    toml.write_text(f'[users.alice]\nrole = "operator"\npassword_hash = "{alice_hash}"\n')
    js = tmp_path / "users.json"
    js.write_text(json.dumps({"users": {"bob": {"role": "viewer", "password_hash": alice_hash}}}))
    assert read_users_file(toml) == [User("alice", Role.OPERATOR, alice_hash)]
    assert read_users_file(js) == [User("bob", Role.VIEWER, alice_hash)]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[users.alice]\nrole = "superuser"\npassword_hash = "{h}"\n', "users.alice.role"),
        ('[users.alice]\nrole = "viewer"\n', "users.alice.password_hash"),
        ('[users.alice]\nrole = "viewer"\npassword_hash = "plain"\n', "users.alice.password_hash"),
        ('[users."al ice"]\nrole = "viewer"\npassword_hash = "{h}"\n', "name"),
        ('[users.alice]\nrole = "viewer"\npassword_hash = "{h}"\npassword = "x"\n', "users.alice"),
        ("users = 3\n", "users"),
        ("[users.alice\n", "users_file"),
    ],
)
def test_malformed_users_file_names_the_field(
    tmp_path: Path, alice_hash: str, text: str, field: str
) -> None:
    path = tmp_path / "users.toml"
    path.write_text(text.replace("{h}", alice_hash))
    with pytest.raises(InputError) as info:
        read_users_file(path)
    assert info.value.field == field, info.value.message


def test_users_from_the_environment(alice_hash: str) -> None:
    users = parse_users_env(f" alice:operator:{alice_hash} ; bob:Viewer:{alice_hash};")
    assert [(u.name, u.role) for u in users] == [("alice", Role.OPERATOR), ("bob", Role.VIEWER)]
    with pytest.raises(InputError) as info:
        parse_users_env(f"alice:operator:{alice_hash};bob:{alice_hash}")
    assert info.value.field == "SXTWIN_USERS[1]"
    with pytest.raises(InputError) as info:
        parse_users_env(f"alice:root:{alice_hash}")
    assert info.value.field == "SXTWIN_USERS[0].role"


def test_load_user_store_merges_file_and_environment_but_refuses_a_clash(
    tmp_path: Path, alice_hash: str
) -> None:
    path = write_users_file(tmp_path / "users.toml", [User("alice", Role.ADMIN, alice_hash)])
    store = load_user_store(path, f"bob:trainer:{alice_hash}")
    assert {u.name: u.role for u in store} == {"alice": Role.ADMIN, "bob": Role.TRAINER}
    with pytest.raises(InputError, match="defined both"):
        load_user_store(path, f"alice:viewer:{alice_hash}")
    assert len(load_user_store(tmp_path / "missing.toml", None)) == 0


def test_write_users_file_does_not_overwrite(tmp_path: Path, alice_hash: str) -> None:
    path = write_users_file(tmp_path / "users.toml", [User("alice", Role.ADMIN, alice_hash)])
    with pytest.raises(ConflictError):
        write_users_file(path, [User("bob", Role.ADMIN, alice_hash)])
    assert [u.name for u in read_users_file(path)] == ["alice"]
    write_users_file(path, [User("bob", Role.ADMIN, alice_hash)], overwrite=True)
    assert [u.name for u in read_users_file(path)] == ["bob"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_demo_users_once_with_hashes_only_in_a_0600_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = generate_demo_users(data_dir)
    assert first.created
    assert {c.role for c in first.credentials} == set(Role)
    assert all(c.name == c.role.value for c in first.credentials)
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    text = first.path.read_text()
    passwords = [c.password for c in first.credentials]
    assert len(set(passwords)) == len(passwords)
    assert all(len(p) >= 16 and p not in text for p in passwords)
    assert all(p not in repr(first) for p in passwords)
    store = load_user_store(first.path)
    for c in first.credentials:
        assert store.authenticate(c.name, c.password).role is c.role

    second = generate_demo_users(data_dir)
    assert not second.created
    assert second.credentials == ()
    assert "cannot be shown again" in second.message
    assert second.path.read_text() == text
