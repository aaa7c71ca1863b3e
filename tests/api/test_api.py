"""The control-room API over a real socket: every route, role checks, audit links, SSE, bad input."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ROLES, Server
from twin.security import PERMISSIONS, Permission, Role

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:sxtwin:problem:")
    assert body["title"]
    assert body["detail"]
    return body


# --------------------------------------------------------------------------- auth


def test_login_gives_a_signed_token_and_bad_credentials_get_401(api_server: Server) -> None:
    r = httpx.post(f"{api_server.url}/auth/token", data={"username": "operator", "password": "wrong-password"})
    body = problem(r, 401)
    assert "unknown user or wrong password" in body["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(
        f"{api_server.url}/auth/token", data={"username": "viewer", "password": api_server.passwords["viewer"]}
    )
    assert r.status_code == 200
    tok = r.json()
    assert tok["token_type"] == "bearer"
    assert tok["role"] == "viewer"
    assert tok["expires_at"] > time.time() + 7 * 3600  # a shift
    assert tok["access_token"].count(".") == 2
    me = httpx.get(f"{api_server.url}/auth/me", headers={"Authorization": f"Bearer {tok['access_token']}"}).json()
    assert me["user"] == "viewer"
    assert me["permissions"] == sorted(p.value for p in PERMISSIONS[Role.VIEWER])
    # the alias that docs/security.md names
    r = httpx.post(
        f"{api_server.url}/api/token", data={"username": "viewer", "password": api_server.passwords["viewer"]}
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    "token",
    ["abc", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."],
    ids=["garbage", "three-parts", "alg-none"],
)
def test_bad_tokens_are_401(api_server: Server, token: str) -> None:
    r = httpx.get(f"{api_server.url}/api/state", headers={"Authorization": f"Bearer {token}"})
    problem(r, 401)


def test_tampered_token_is_401(api_server: Server) -> None:
    head, body, sig = api_server.tokens["viewer"].split(".")
    import base64

    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["role"] = "admin"
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    r = httpx.get(f"{api_server.url}/api/users", headers={"Authorization": f"Bearer {head}.{forged}.{sig}"})
    assert "signature" in problem(r, 401)["detail"]


def test_no_token_is_401_on_every_api_route(api_server: Server) -> None:
    for path in (
        "/api/state",
        "/api/tags",
        "/api/plant",
        "/api/proposals",
        "/api/events",
        "/api/audit",
        "/api/history/tags",
        "/api/setpoints",
        "/api/stream",
    ):
        r = httpx.get(f"{api_server.url}{path}")
        body = problem(r, 401)
        assert "not authenticated" in body["detail"]


# (method, path, json body, the one permission the route needs); bodies chosen so that an allowed
# role gets past the check without lasting effect (unknown ids, values out of range...)
MUTATING = [
    ("POST", "/api/proposals", None, Permission.APPROVE_PROPOSAL),
    ("POST", "/api/proposals/999999/approve", {"comment": "x"}, Permission.APPROVE_PROPOSAL),
    ("POST", "/api/proposals/999999/reject", {"comment": "x"}, Permission.APPROVE_PROPOSAL),
    ("POST", "/api/setpoints/organic_flow", {"value": 1e9}, Permission.WRITE_SETPOINT),
    ("PUT", "/api/mode", {"mode": "advisory", "reason": "role test"}, Permission.ENABLE_CLOSED_LOOP),
    (
        "POST",
        "/api/lab-assays",
        {"tag": "NOPE-1.Dy", "value_g_per_l": 1.0, "sample_time_h": 0.0},
        Permission.ENTER_LAB_ASSAY,
    ),
    ("POST", "/api/events/999999/acknowledge", {"comment": "x"}, Permission.ACKNOWLEDGE_ALARM),
    ("POST", "/api/what-if", {"moves": [{"variable": "nope", "value": 1.0}], "hours": 1}, Permission.RUN_WHAT_IF),
    ("POST", "/api/studies", {"kind": "sweep"}, Permission.SUBMIT_STUDY),
    ("POST", "/api/studies/nope/cancel", None, Permission.CANCEL_STUDY),
    ("PUT", "/api/users/newbie", {"role": "viewer", "password": "short"}, Permission.MANAGE_USERS),
    ("DELETE", "/api/users/nobody-here", None, Permission.MANAGE_USERS),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "permission"), MUTATING, ids=[f"{m} {p}" for m, p, _, _ in MUTATING]
)
def test_every_mutating_route_checks_the_role(api_server: Server, method, path, body, permission) -> None:
    r = httpx.request(method, f"{api_server.url}{path}", json=body)
    problem(r, 401)
    for role in ROLES:
        r = httpx.request(method, f"{api_server.url}{path}", json=body, headers=api_server.headers(role), timeout=60)
        if permission in PERMISSIONS[Role(role)]:
            assert r.status_code not in (401, 403), (role, r.text)
        else:
            detail = problem(r, 403)
            assert detail["details"]["permission"] == permission.value
            assert f"role {role!r} may not {permission.value}" in detail["detail"]


def test_read_only_roles_read_and_admin_routes_are_admin_only(api_server: Server) -> None:
    for role in ROLES:
        with api_server.client(role) as c:
            assert c.get("/api/state").status_code == 200
            assert c.get("/api/users").status_code == (200 if role == "admin" else 403)
            assert c.get("/api/audit").status_code == (200 if role in ("engineer", "admin") else 403)
            assert c.get("/api/trainer/true-state").status_code == (200 if role in ("trainer", "admin") else 403)


# --------------------------------------------------------------------------- live state


def test_health_ready_and_metrics(api_server: Server) -> None:
    assert httpx.get(f"{api_server.url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{api_server.url}/ready").json()
    assert ready["status"] == "ready"
    assert ready["plant_time_h"] > 0
    httpx.get(f"{api_server.url}/api/state", headers=api_server.headers("viewer"))
    text = httpx.get(f"{api_server.url}/metrics").text
    assert 'sxtwin_http_requests_total{method="GET",route="/api/state",status="200"}' in text
    assert "sxtwin_http_request_duration_seconds_bucket" in text
    for name in (
        "sxtwin_estimator_wall_seconds",
        "sxtwin_plant_time_hours",
        "sxtwin_estimator_healthy 1.0",
        'sxtwin_predicted_purity{product="Dy2O3"}',
    ):
        assert name in text


def test_plant_spec(api_server: Server) -> None:
    plant = httpx.get(f"{api_server.url}/api/plant", headers=api_server.headers("viewer")).json()
    assert plant["name"] == "tb_dy"
    assert plant["plant_kind"] == "in-process"
    (c,) = plant["circuits"]
    assert len(c["stages"]) == 80
    assert c["stages"][0] == "E1"
    assert set(c["sections"]) == {"extraction", "scrub", "strip"}
    assert {m["name"] for m in plant["manipulated"]} >= {"organic_flow", "scrub_flow"}


def test_state_has_profiles_with_95_percent_bounds(api_server: Server) -> None:
    s = httpx.get(f"{api_server.url}/api/state", headers=api_server.headers("viewer")).json()
    assert s["healthy"] is True
    assert s["plant_time_h"] > 0
    (c,) = s["circuits"]
    assert c["elements"] == ["Na", "Gd", "Tb", "Dy", "Ho"]  # Na: the saponification cation
    n = len(c["stages"])
    for el in c["elements"]:
        for phase in ("aqueous", "organic"):
            mean, lo, hi = (c[f"{phase}{k}_mol_per_l"][el] for k in ("", "_low", "_high"))
            assert len(mean) == len(lo) == len(hi) == n
            assert all(a <= b <= d for a, b, d in zip(lo, mean, hi, strict=True))
            assert all(b > 0 for b in mean)
    # bounds are real: the 95 % band is wider than nothing and narrower than a decade at the analysers
    dy = c["aqueous_mol_per_l"]["Dy"]
    dy_hi = c["aqueous_high_mol_per_l"]["Dy"]
    assert 1.0 < dy_hi[9] / dy[9] < 10.0
    assert len(c["ph"]) == n
    assert set(s["kpis"]) == {"Dy2O3", "Tb_cut"}
    assert s["kpis"]["Dy2O3"]["on_spec"] is True
    assert any(k.endswith("extractant_multiplier") for k in s["parameters"])


def test_tags_carry_quality_and_use(api_server: Server) -> None:
    tags = httpx.get(f"{api_server.url}/api/tags", headers=api_server.headers("viewer")).json()
    by = {t["tag"]: t for t in tags}
    assert {"FIC-102.PV", "FIC-102.SP", "AI-121.Dy", "AI-124.Ho"} <= set(by)
    pv = by["FIC-102.PV"]
    assert pv["quality"] == "good"
    assert pv["used"] is True
    assert pv["unit"] == "L/h"
    assert 900 < pv["value"] < 1100
    kpis = httpx.get(f"{api_server.url}/api/kpis", headers=api_server.headers("viewer")).json()
    assert kpis["Dy2O3"]["purity_min"] == pytest.approx(0.995)


# --------------------------------------------------------------------------- history


def test_history_of_a_tag_raw_aggregated_and_paged(api_server: Server) -> None:
    with api_server.client("viewer") as c:
        raw = c.get("/api/history/samples", params={"tag": "FIC-102.PV", "limit": 2}).json()
        assert len(raw["items"]) == 2
        assert raw["items"][0]["quality"] in ("good", "uncertain", "bad")
        nxt = c.get("/api/history/samples", params={"tag": "FIC-102.PV", "limit": 2, "cursor": raw["next_cursor"]})
        assert nxt.status_code == 200
        assert nxt.json()["items"][0]["source_time"] > raw["items"][-1]["source_time"]
        start = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
        agg = c.get(
            "/api/history/samples", params={"tag": "FIC-102.PV", "interval_s": 3600, "aggregate": "max", "start": start}
        ).json()
        assert agg["aggregate"] == "max"
        assert agg["items"]
        assert all(900 < p["value"] < 1100 for p in agg["items"])
        assert all(p["count"] >= 1 for p in agg["items"])
        assert "FIC-102.PV" in c.get("/api/history/tags").json()


def test_history_of_an_estimate(api_server: Server) -> None:
    deadline = time.monotonic() + 20
    with api_server.client("viewer") as c:
        while time.monotonic() < deadline:
            h = c.get("/api/history/estimates", params={"circuit": "TbDy", "stage": "E10", "element": "Dy"}).json()
            if h["items"]:
                break
            time.sleep(0.5)
        assert h["items"], "no estimate recorded"
        assert all(p["value"] > 0 and p["std"] >= 0 for p in h["items"])
        agg = c.get(
            "/api/history/estimates",
            params={"circuit": "TbDy", "stage": "E10", "element": "Dy", "interval_s": 3600, "aggregate": "mean"},
        ).json()
        assert agg["items"][0]["count"] >= 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("path", "params", "field", "words"),
    [
        ("/api/history/samples", {"tag": "FIC-102.PV", "limit": 0}, "limit", ">= 1"),
        ("/api/history/samples", {"tag": "FIC-102.PV", "interval_s": -5}, "interval_s", "> 0"),
        ("/api/history/samples", {"tag": "FIC-102.PV", "start": "2026-01-01T00:00:00"}, "start", "time zone"),
        ("/api/history/samples", {"tag": "FIC-102.PV", "cursor": "not-a-cursor"}, "cursor", "next_cursor"),
        ("/api/history/samples", {}, "tag", "required"),
        ("/api/history/estimates", {"circuit": "TbDy", "stage": "X99", "element": "Dy"}, "stage", "E1..P10"),
        ("/api/history/estimates", {"circuit": "Nope", "stage": "E1", "element": "Dy"}, "circuit", "TbDy"),
        ("/api/events", {"min_severity": "apocalyptic"}, "min_severity", "info"),
        ("/api/proposals", {"status": "maybe"}, "status", "pending"),
    ],
)
def test_bad_queries_are_422_naming_the_field_and_what_is_allowed(api_server, path, params, field, words) -> None:
    r = httpx.get(f"{api_server.url}{path}", params=params, headers=api_server.headers("viewer"))
    body = problem(r, 422)
    assert body["field"] == field
    assert words in body["detail"] or any(words in (e.get("allowed") or "") for e in body.get("errors", []))


def test_bad_bodies_are_422(api_server: Server) -> None:
    with api_server.client("operator") as c:
        r = c.post("/api/what-if", json={"moves": [{"variable": "organic_flow", "value": 5000}], "hours": 2})
        body = problem(r, 422)
        assert body["field"] == "moves[0].value"
        assert "700 to 1400" in body["detail"]
        body = problem(c.post("/api/what-if", json={"hours": 1000}), 422)
        assert body["field"] == "hours"
        assert "<= 168" in body["errors"][0]["allowed"]
        body = problem(c.post("/api/what-if", content=b"{not json", headers={"content-type": "application/json"}), 422)
        body = problem(c.post("/api/what-if", json={"hours": 1, "surprise": 1}), 422)
        assert body["field"] == "surprise"
        body = problem(c.post("/api/setpoints/organic_flow", json={"value": 2000.0}), 422)
        assert "700 to 1400" in body["detail"]
        body = problem(c.post("/api/setpoints/nothing", json={"value": 2.0}), 422)
        assert "organic_flow" in body["detail"]
        body = problem(
            c.post("/api/lab-assays", json={"tag": "AI-121.Dy", "value_g_per_l": 1.0, "sample_time_h": 1e5}), 422
        )
        assert body["field"] == "sample_time_h"
        body = problem(
            c.post("/api/lab-assays", json={"tag": "AI-121.Dy", "value_g_per_l": -1, "sample_time_h": 0}), 422
        )
        assert body["field"] == "value_g_per_l"
        body = problem(c.put("/api/mode", json={"mode": "autopilot"}), 422)
        assert "advisory" in body["errors"][0]["allowed"]
        problem(c.get("/api/proposals/0"), 422)
        problem(c.get("/api/proposals/123456"), 404)
        problem(c.get("/api/no/such/route"), 404)
        problem(c.delete("/api/state"), 405)


# --------------------------------------------------------------------------- proposals and writes


def test_approval_writes_setpoints_linked_to_the_approver(api_server: Server) -> None:
    with api_server.client("operator") as op, api_server.client("engineer") as eng:
        p = op.post("/api/proposals").json()
        assert p["status"] == "pending"
        assert p["created_by"] == "operator"
        sp = op.get("/api/setpoints").json()
        assert sp["pending_proposal_id"] == p["id"]
        assert sp["advisor"] is True
        proposed = {r["parameter"]: r["proposed"] for r in sp["setpoints"]}
        assert proposed["TbDy.scrub_flow_l_per_h"] == pytest.approx(p["setpoints"]["TbDy.scrub_flow_l_per_h"])
        out = op.post(f"/api/proposals/{p['id']}/approve", json={"comment": "looks right"}).json()
        assert out["verdict"] == "approve"
        assert sorted(out["written"]) == ["FIC-102.SP", "FIC-103.SP"]
        assert out["proposal"]["status"] == "applied"
        assert out["proposal"]["decision"]["decided_by"] == "operator"
        assert out["proposal"]["decision"]["comment"] == "looks right"
        writes = op.get("/api/writes", params={"proposal_id": p["id"]}).json()["items"]
        assert {w["tag"] for w in writes} == {"FIC-102.SP", "FIC-103.SP"}
        for w in writes:
            assert w["approved_by"] == "operator"
            assert w["proposal_id"] == p["id"]
            assert w["outcome"] == "succeeded"
        # the plant follows
        tags = {t["tag"]: t for t in op.get("/api/tags").json()}
        assert tags["FIC-103.SP"]["value"] == pytest.approx(p["setpoints"]["TbDy.scrub_flow_l_per_h"])
        # a decided proposal cannot be decided again
        body = problem(op.post(f"/api/proposals/{p['id']}/reject", json={"comment": "too late"}), 409)
        assert "applied" in body["detail"]
        # the audit log links the write to the approval and its approver
        audit = eng.get("/api/audit", params={"action": "write.intent", "limit": 10}).json()["items"]
        mine = [a for a in audit if a["details"].get("proposal_id") == p["id"]]
        assert len(mine) == 2
        assert all(a["details"]["approved_by"] == "operator" and a["user"] == "operator" for a in mine)
        approvals = eng.get("/api/audit", params={"action": "proposal.approve"}).json()["items"]
        assert any(a["target"] == f"proposal:{p['id']}" and a["user"] == "operator" for a in approvals)
        # the viewer cannot approve
        p2 = op.post("/api/proposals").json()
        problem(
            httpx.post(f"{api_server.url}/api/proposals/{p2['id']}/approve", headers=api_server.headers("viewer")), 403
        )
        rej = op.post(f"/api/proposals/{p2['id']}/reject", json={"comment": "not now"}).json()
        assert rej["proposal"]["status"] == "rejected"
        assert rej["written"] == []
        assert op.get(f"/api/proposals/{p2['id']}").json()["decision"]["comment"] == "not now"
        listed = op.get("/api/proposals", params={"status": "rejected"}).json()["items"]
        assert p2["id"] in [x["id"] for x in listed]


def test_direct_setpoint_write_is_audited_and_rate_limited(api_server: Server) -> None:
    with api_server.client("operator") as op, api_server.client("admin") as adm:
        cur = {r["name"]: r for r in op.get("/api/setpoints").json()["setpoints"]}["strip_flow"]
        target = round(cur["value"] + 5.0, 3)
        w = op.post("/api/setpoints/FIC-104", json={"value": target, "reason": "test"}).json()
        assert w["tag"] == "FIC-104.SP"
        assert w["requested_by"] == "operator"
        assert w["approved_by"] is None
        assert w["outcome"] == "succeeded"
        # beyond the plant's rate limit (30 L/h per hour): refused by the plant, recorded as failed
        body = problem(op.post("/api/setpoints/strip_flow", json={"value": min(target + 90.0, 250.0)}), 409)
        assert "rate limit" in body["detail"]
        failed = op.get("/api/writes", params={"outcome": "failed"}).json()["items"]
        assert failed[0]["tag"] == "FIC-104.SP"
        entries = adm.get("/api/audit", params={"user": "operator", "action": "write.intent"}).json()["items"]
        assert any(e["target"] == "FIC-104.SP" for e in entries)


def test_mode_switch_is_audited_and_raises_an_event_that_can_be_acknowledged(api_server: Server) -> None:
    with api_server.client("operator") as op, api_server.client("engineer") as eng:
        assert (
            op.put("/api/mode", json={"mode": "closed_loop", "reason": "night shift"}).json()["mode"] == "closed_loop"
        )
        assert op.get("/api/mode").json()["mode"] == "closed_loop"
        assert op.put("/api/mode", json={"mode": "advisory"}).json()["mode"] == "advisory"
        changes = eng.get("/api/audit", params={"action": "mode.change"}).json()["items"]
        assert any(a["details"]["to"] == "closed_loop" and a["details"]["reason"] == "night shift" for a in changes)
        events = op.get("/api/events", params={"acknowledged": False}).json()["items"]
        ev = next(e for e in events if e["source"] == "mode" and "closed_loop" in e["message"])
        problem(
            httpx.post(f"{api_server.url}/api/events/{ev['id']}/acknowledge", headers=api_server.headers("viewer")), 403
        )
        acked = op.post(f"/api/events/{ev['id']}/acknowledge", json={"comment": "seen"}).json()
        assert acked["acknowledged"] is True
        assert acked["acknowledged_by"] == "operator"
        assert (
            "already acknowledged by operator" in problem(op.post(f"/api/events/{ev['id']}/acknowledge"), 409)["detail"]
        )
        audit = eng.get("/api/audit", params={"action": "event.acknowledge"}).json()["items"]
        assert any(a["target"] == f"event:{ev['id']}" for a in audit)


def test_lab_assay_is_entered_audited_and_listed(api_server: Server) -> None:
    with api_server.client("operator") as op, api_server.client("admin") as adm:
        now = op.get("/api/state").json()["plant_time_h"]
        r = op.post("/api/lab-assays", json={"tag": "AI-121.Dy", "value_g_per_l": 30.0, "sample_time_h": now - 0.5})
        assert r.status_code == 201, r.text
        a = r.json()
        assert a["entered_by"] == "operator"
        assert a["tag"] == "AI-121.Dy"
        assert op.get("/api/lab-assays").json()["items"][0]["id"] == a["id"]
        body = problem(
            op.post("/api/lab-assays", json={"tag": "FIC-101.PV", "value_g_per_l": 1.0, "sample_time_h": 0.0}), 422
        )
        assert "AI-121.Dy" in body["detail"]  # the allowed analyser channels
        assert adm.get("/api/audit", params={"action": "lab_assay"}).json()["items"][0]["user"] == "operator"


def test_what_if_predicts_trajectories_without_touching_the_plant(api_server: Server) -> None:
    with api_server.client("operator") as op:
        before = {t["tag"]: t["value"] for t in op.get("/api/tags").json()}["FIC-102.SP"]
        r = op.post(
            "/api/what-if", json={"moves": [{"variable": "FIC-102", "value": 1300.0, "at_h": 1.0}], "hours": 24}
        )
        assert r.status_code == 200, r.text
        w = r.json()
        assert w["success"] is True
        assert w["times_h"][0] == 0.0
        assert w["times_h"][-1] == pytest.approx(24.0)
        n = len(w["times_h"])
        assert len(w["products"]["Dy2O3"]["purity"]) == n
        assert w["setpoints"]["organic_flow"][-1] == pytest.approx(1300.0)
        assert 900 < w["setpoints"]["organic_flow"][0] < 1100
        assert set(w["final_aqueous_mol_per_l"]["TbDy"]) == {"Na", "Gd", "Tb", "Dy", "Ho"}
        # the move changes the prediction against doing nothing
        base = op.post("/api/what-if", json={"moves": [], "hours": 24}).json()
        moved, held = w["products"]["Tb_cut"]["recovery"][-1], base["products"]["Tb_cut"]["recovery"][-1]
        assert abs(moved - held) > 1e-4
        after = {t["tag"]: t["value"] for t in op.get("/api/tags").json()}["FIC-102.SP"]
        assert after == before
        problem(
            httpx.post(f"{api_server.url}/api/what-if", json={"hours": 1}, headers=api_server.headers("viewer")), 403
        )


# --------------------------------------------------------------------------- users, trainer, studies


def test_admin_manages_users_and_a_removed_user_is_logged_out(api_server: Server) -> None:
    with api_server.client("admin") as adm:
        r = adm.put("/api/users/shift-b", json={"role": "operator", "password": "correct horse battery"})
        assert r.status_code == 200, r.text
        assert {"name": "shift-b", "role": "operator", "source": "users_file"} in adm.get("/api/users").json()
        tok = httpx.post(
            f"{api_server.url}/auth/token", data={"username": "shift-b", "password": "correct horse battery"}
        ).json()["access_token"]
        h = {"Authorization": f"Bearer {tok}"}
        assert httpx.get(f"{api_server.url}/auth/me", headers=h).json()["role"] == "operator"
        assert adm.delete("/api/users/shift-b").status_code == 204
        body = problem(httpx.get(f"{api_server.url}/api/state", headers=h), 401)
        assert "no longer exists" in body["detail"]
        problem(adm.delete("/api/users/shift-b"), 404)
        actions = [a["action"] for a in adm.get("/api/audit", params={"user": "admin"}).json()["items"]]
        assert "users.create" in actions
        assert "users.remove" in actions
    problem(
        httpx.put(
            f"{api_server.url}/api/users/x",
            json={"role": "admin", "password": "12345678"},
            headers=api_server.headers("operator"),
        ),
        403,
    )


def test_trainer_reads_the_true_state(api_server: Server) -> None:
    r = httpx.get(f"{api_server.url}/api/trainer/true-state", headers=api_server.headers("trainer"), timeout=30)
    assert r.status_code == 200
    truth = r.json()
    assert len(truth["circuits"]["TbDy"]["stages"]) == 80


def test_a_study_runs_through_the_api_from_submit_to_plot(api_server: Server) -> None:
    """The real study runner (twin.study_service) behind the real server: a two-case sweep of the
    twin's own plant, submitted by an engineer, watched and read by a viewer."""
    body = {
        "kind": "sweep",
        "study": {"name": "api_scrub"},
        "sweep": {"parameters": [{"name": "scrub_flow", "values": [200.0, 215.0]}]},
    }
    problem(httpx.post(f"{api_server.url}/api/studies", json=body, headers=api_server.headers("operator")), 403)
    with api_server.client("engineer", timeout=60) as eng, api_server.client("viewer", timeout=60) as viewer:
        bad = problem(eng.post("/api/studies", json={"kind": "sweep", "study": {"name": "x"}}), 422)
        assert bad["field"] == "sweep"
        assert "needs a [sweep] section" in bad["detail"]
        bad = problem(eng.post("/api/studies", json={**body, "study": {"name": "x", "plant": "/etc/passwd"}}), 422)
        assert bad["field"] == "study.plant"
        problem(viewer.get("/api/studies/no-such-study"), 404)

        r = eng.post("/api/studies", json=body)
        assert r.status_code == 202, r.text
        st = r.json()
        assert st["status"] in ("queued", "running")
        assert (st["user"], st["cases_total"]) == ("engineer", 2)
        sid = st["id"]
        deadline = time.monotonic() + 180
        while st["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.25)
            st = viewer.get(f"/api/studies/{sid}").json()
        assert st["status"] == "done", st
        assert (st["progress"], st["cases_done"], st["plots"]) == (1.0, 2, ["sweep"])
        assert st["started_at"] <= st["finished_at"]
        assert Path(st["out_dir"]) == api_server.data_dir / "studies" / sid  # outputs under the data directory
        assert sid in [s["id"] for s in viewer.get("/api/studies").json()]

        res = viewer.get(f"/api/studies/{sid}/result").json()
        assert (res["n_cases"], res["n_failed"]) == (2, 0)
        assert [c["label.scrub_flow"] for c in res["cases"]] == [200.0, 215.0]
        for case in res["cases"]:
            assert 0.99 < case["Dy2O3.purity"] < 1.0  # the design makes >= 99.5 % Dy2O3
            assert 0.0 < case["Tb_cut.recovery"] <= 1.0
        assert res["plots"] == {"sweep": "sweep.png"}
        png = viewer.get(f"/api/studies/{sid}/plots/sweep")
        assert png.status_code == 200
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG")
        assert "plots: sweep" in problem(viewer.get(f"/api/studies/{sid}/plots/pareto"), 404)["detail"]
        assert "done already" in problem(eng.post(f"/api/studies/{sid}/cancel"), 409)["detail"]
        audit = eng.get("/api/audit", params={"user": "engineer", "action": "study.submit"}).json()["items"]
        assert f"study:{sid}" in [a["target"] for a in audit]


# --------------------------------------------------------------------------- live updates


def _read_events(r: httpx.Response, wanted: set[str], timeout_s: float) -> dict[str, dict]:
    got: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    event = None
    for line in r.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            got.setdefault(event, json.loads(line[6:]))
        if wanted <= set(got) or time.monotonic() > deadline:
            break
    return got


def test_sse_delivers_state_tags_proposals_and_events(api_server: Server) -> None:
    url = f"{api_server.url}/api/stream"
    with httpx.stream("GET", url, params={"access_token": api_server.tokens["viewer"]}, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        httpx.post(f"{api_server.url}/api/proposals", headers=api_server.headers("operator"), timeout=30)
        got = _read_events(r, {"hello", "state", "tags", "proposal"}, 20)
    assert {"hello", "state", "tags", "proposal"} <= set(got)
    assert got["state"]["plant_time_h"] > 0
    assert "FIC-102.PV" in got["tags"]["tags"]
    assert got["proposal"]["status"] == "pending"
    # the same stream with a header token; a bad token is refused before streaming
    with httpx.stream("GET", url, headers=api_server.headers("operator"), timeout=30) as r:
        assert r.status_code == 200
    assert httpx.get(url, params={"access_token": "nope"}).status_code == 401
