"""Deployment settings (twin.settings): loopback defaults, environment overrides, errors naming the
variable, the secret key generated once with mode 0600, and no side effects at import."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from models.errors import InputError
from twin.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SXTWIN_") and name != "SXTWIN_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)


def test_defaults_are_loopback_and_embedded(tmp_path: Path) -> None:
    s = get_settings()
    assert s.host == "127.0.0.1"
    assert (s.api_port, s.opcua_port) == (8000, 4840)
    assert s.data_dir == tmp_path / "home" / ".local" / "share" / "sxtwin"
    assert s.resolved_database_url == f"sqlite:///{s.data_dir / 'historian.sqlite3'}"
    assert s.resolved_users_file == s.data_dir / "users.toml"
    assert s.dask_scheduler is None
    assert s.opcua_allow_anonymous is False
    assert not s.data_dir.exists()  # nothing is created until asked


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert get_settings().data_dir == tmp_path / "xdg" / "sxtwin"
    monkeypatch.setenv("SXTWIN_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("SXTWIN_DATABASE_URL", "postgresql://u:p@127.0.0.1:5432/x")
    monkeypatch.setenv("SXTWIN_API_PORT", "8100")
    monkeypatch.setenv("SXTWIN_DASK_SCHEDULER", "tcp://127.0.0.1:8786")
    s = get_settings()
    assert s.data_dir == tmp_path / "d"
    assert s.resolved_database_url == "postgresql://u:p@127.0.0.1:5432/x"
    assert s.api_port == 8100
    assert s.dask_scheduler == "tcp://127.0.0.1:8786"
    assert get_settings(api_port=9000).api_port == 9000


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("SXTWIN_API_PORT", "not-a-port", "api_port"),
        ("SXTWIN_OPCUA_PORT", "70000", "opcua_port"),
        ("SXTWIN_SAMPLE_RETENTION_DAYS", "0", "sample_retention_days"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(InputError) as info:
        get_settings()
    assert info.value.field == field
    assert info.value.message.startswith(f"{env}: {value!r}")


def test_clashing_ports_and_short_secret_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="both 4840"):
        get_settings(api_port=4840)
    monkeypatch.setenv("SXTWIN_SECRET_KEY", "too-short")
    with pytest.raises(InputError) as info:
        get_settings()
    assert "too-short" not in info.value.message
    assert info.value.field == "secret_key"


def test_secret_key_generated_once_with_mode_0600(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data")
    key = s.resolve_secret_key().get_secret_value()
    path = tmp_path / "data" / "secret_key"
    assert len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert Settings(data_dir=tmp_path / "data").resolve_secret_key().get_secret_value() == key
    given = "k" * 40
    assert (
        Settings(data_dir=tmp_path / "data", secret_key=given)
        .resolve_secret_key()
        .get_secret_value()
        == given
    )
    assert key not in repr(Settings(data_dir=tmp_path / "data", secret_key=key))


def test_importing_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SXTWIN_")}
    env["HOME"] = str(home)
    code = "import twin.settings, twin.historian, twin.users, twin.security"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env, timeout=60)
    assert list(home.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
