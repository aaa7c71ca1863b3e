"""``sxtwin plant``: starts, prints where it listens, stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import TB_DY, TB_DY_MISMATCH, free_port

pytestmark = pytest.mark.integration


def test_sxtwin_plant_serves_and_stops_on_ctrl_c(tmp_path: Path, opcua_cache: Path) -> None:
    data = tmp_path / "data"
    if opcua_cache.exists():
        shutil.copytree(opcua_cache, data / "cache", ignore=shutil.ignore_patterns("*.lock"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SXTWIN_")}
    port = free_port()
    exe = Path(sys.executable).parent / "sxtwin"
    cmd = [str(exe), "plant", str(TB_DY), "--mismatch", str(TB_DY_MISMATCH)]
    cmd += ["--port", str(port), "--data-dir", str(data), "--speed", "3600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("plant running"):
                break
        assert any(f"opc.tcp://127.0.0.1:{port}/sxtwin/plant" in x for x in lines), "".join(lines)
        assert any(x.startswith("plant running at speed 3600") for x in lines), "".join(lines)
        assert any("generated demo users" in x for x in lines)  # first start without users: demo users
        assert (data / "users.toml").exists()
        assert (data / "pki" / "own" / "cert.der").exists()
        assert oct((data / "pki" / "own" / "key.pem").stat().st_mode & 0o777) == "0o600"
        proc.send_signal(signal.SIGINT)
        t_stop = time.monotonic()
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"the plant did not stop within 60 s of Ctrl-C; its stderr ended with: {err[-2000:]}")
        assert rc == 0
        assert time.monotonic() - t_stop < 30.0  # about 1.3 s measured
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
