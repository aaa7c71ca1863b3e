"""Interoperability: node-opcua (an independent OPC UA stack, pinned in tests/interop/package.json,
installed by ``make interop``) connects to the simulated plant over Basic256Sha256 SignAndEncrypt
as an operator, browses, reads values with units and ranges, subscribes and writes a setpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from opcua.security import ensure_certificate
from opcua.tags import UNITS, plant_tags
from tests.opcua.conftest import Credentials, start_plant
from twin.security import Role

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")
INSTALLED = (HERE / "node_modules" / "node-opcua-client").is_dir()
APP_URI = "urn:sxtwin:interop:node-opcua"


@pytest.mark.skipif(
    NODE is None or not INSTALLED,
    reason="node-opcua is not installed: run `make interop` (Node.js 20 and npm needed)",
)
def test_node_opcua_client(tmp_path: Path, opcua_cache: Path, credentials: Credentials) -> None:
    thread, data_dir, _ = start_plant(tmp_path, opcua_cache, credentials, speed=3600.0, seed=3)
    cert_der, key_pem = ensure_certificate(tmp_path / "node-pki" / "own", APP_URI, client=True)
    (data_dir / "pki" / "trusted").mkdir(parents=True, exist_ok=True)
    shutil.copy(cert_der, data_dir / "pki" / "trusted" / "node-opcua.der")
    cert_pem = tmp_path / "node-cert.pem"
    cert_pem.write_bytes(x509.load_der_x509_certificate(cert_der.read_bytes()).public_bytes(Encoding.PEM))
    name, password = credentials.of(Role.OPERATOR)
    read_tags = ["FIC-102.PV", "AIC-111.SP", "AI-124.Dy", "TI-114.PV"]
    with thread:
        config = {
            "url": thread.server.endpoint_url,
            "user": name,
            "password": password,
            "certificateFile": str(cert_pem),
            "privateKeyFile": str(key_pem),
            "applicationUri": APP_URI,
            "pkiDir": str(tmp_path / "node-pki" / "manager"),
            "readTags": read_tags,
            "subscribeTag": "FIC-102.PV",
            "setpoint": {"tag": "FIC-103.SP", "value": 215.0, "outOfRange": 999.0},
        }
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps(config), encoding="utf-8")
        proc = subprocess.run(
            [str(NODE), str(HERE / "client.js"), str(cfg)], capture_output=True, text=True, timeout=120, cwd=HERE
        )
        audit = thread.server.historian.audit_log(limit=10).items
    assert proc.returncode == 0, f"node client failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    result = [line for line in proc.stdout.splitlines() if line.startswith("SXTWIN_RESULT ")]
    assert result, f"no result from the node client: {proc.stdout[-2000:]}"
    out = json.loads(result[-1].removeprefix("SXTWIN_RESULT "))
    assert out["connected"] is True
    ns = out["namespaceIndex"]
    assert ns > 0
    tags = {t.tag for t in plant_tags(thread.server.spec)}
    browsed = {b.split(";s=", 1)[1] for b in out["browsed"] if b.startswith(f"ns={ns};s=")}
    assert tags <= browsed
    info = {t.tag: t for t in plant_tags(thread.server.spec)}
    for tag in read_tags:
        v = out["values"][tag]
        assert v["status"] in ("Good", "UncertainSensorNotAccurate"), v
        assert isinstance(v["value"], float)
        assert v["unitId"] == UNITS[info[tag].unit].unit_id
        assert v["range"] == list(info[tag].eu_range)
        assert v["sourceTimestamp"] is not None
    assert out["notifications"] >= 3
    assert out["write"] == "Good"
    assert out["writeOutOfRange"] == "BadOutOfRange"
    assert out["setpointAfter"] == pytest.approx(215.0)
    assert any(a.user == name and a.target == "FIC-103.SP" for a in audit)
