"""The dashboard in headless Chromium: log in, the plotted profiles are /api/state's numbers, an
operator approves a proposal and sees it approved. Saves a screenshot (docs/dashboard.png when
SXTWIN_UPDATE_SCREENSHOT=1)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api._cdp import Browser, find_chromium
from tests.api.conftest import Server

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium: apt-get install -y chromium)")
    b = Browser(exe)
    try:
        yield b
    finally:
        b.close()


def _plotted(browser: Browser) -> dict:
    return browser.evaluate(
        """(() => {
          const svg = document.querySelector('svg.profile');
          if (!svg) return null;
          const series = [...svg.querySelectorAll('path.series')].map(p => ({
            element: p.dataset.element, phase: p.dataset.phase,
            values: JSON.parse(p.dataset.values), low: JSON.parse(p.dataset.low), high: JSON.parse(p.dataset.high)}));
          return {circuit: svg.dataset.circuit, plant_time_h: Number(svg.dataset.plantTimeH), series};
        })()"""
    )


def test_dashboard_login_profiles_and_approval(api_server: Server, browser: Browser, tmp_path: Path) -> None:
    browser.navigate(api_server.url + "/")
    browser.wait_for("!document.querySelector('#login-view').hidden")
    assert browser.evaluate("document.querySelector('#main-view').hidden") is True
    # a wrong password is refused with the API's message
    browser.evaluate(
        "document.querySelector('#login-user').value='operator';"
        "document.querySelector('#login-password').value='not-the-password';"
        "document.querySelector('#login-form').requestSubmit()"
    )
    assert "wrong password" in browser.wait_for("document.querySelector('#login-error').textContent")
    password = json.dumps(api_server.passwords["operator"])
    browser.evaluate(
        f"document.querySelector('#login-password').value={password};"
        "document.querySelector('#login-form').requestSubmit()"
    )
    browser.wait_for("document.querySelectorAll('svg.profile path.series').length > 0")
    assert browser.evaluate("sessionStorage.getItem('sxtwin.token') !== null")
    assert browser.evaluate("document.querySelector('#who').textContent") == "operator (operator)"
    browser.wait_for("document.querySelector('#live-badge').textContent === 'live'", timeout_s=15)

    # the plotted numbers are /api/state's (compared at the same estimate)
    for _ in range(30):
        shown = _plotted(browser)
        state = httpx.get(f"{api_server.url}/api/state", headers=api_server.headers("viewer")).json()
        if shown and shown["plant_time_h"] == state["plant_time_h"]:
            break
    else:
        pytest.fail("the dashboard never showed the estimate /api/state returned")
    (circuit,) = state["circuits"]
    assert shown["circuit"] == circuit["name"]
    rare_earths = [e for e in circuit["elements"] if e != "Na"]
    assert {(s["element"], s["phase"]) for s in shown["series"]} == {
        (e, ph) for e in rare_earths for ph in ("aqueous", "organic")
    }
    for s in shown["series"]:
        key = s["phase"] + "_{}mol_per_l"
        assert s["values"] == circuit[key.format("")][s["element"]]
        assert s["low"] == circuit[key.format("low_")][s["element"]]
        assert s["high"] == circuit[key.format("high_")][s["element"]]
    assert browser.evaluate("document.querySelectorAll('#tags tbody tr').length") >= 20

    # the operator asks for a proposal, approves it, and sees it approved
    card = (
        "(() => { const c = document.querySelector('#proposal-card .proposal');"
        " return c ? Number(c.dataset.proposalId) : 0; })()"
    )
    before = browser.evaluate(card)
    browser.evaluate("document.querySelector('#run-cycle').click()")
    pid = browser.wait_for(f"(() => {{ const id = {card}; return id > {before} ? id : 0; }})()")
    browser.evaluate(
        f"document.querySelector('#decision-comment').value='approved from the dashboard test';"
        f"document.querySelector('#approve-{pid}').click()"
    )
    row = f"document.querySelector('#proposals tr[data-proposal-id=\"{pid}\"]')"
    try:
        text = browser.wait_for(
            f"(() => {{ const r = {row}; return r && r.textContent.includes('approved by operator')"
            f" ? r.textContent : ''; }})()"
        )
    except TimeoutError:
        shown = browser.evaluate(
            "document.querySelector('#proposals').textContent + ' | error: ' + "
            "document.querySelector('#proposal-error').textContent"
        )
        pytest.fail(f"proposal {pid} not shown as approved: {shown}")
    assert "approved by operator" in text
    p = httpx.get(f"{api_server.url}/api/proposals/{pid}", headers=api_server.headers("viewer")).json()
    assert p["decision"]["decided_by"] == "operator"
    assert p["decision"]["comment"] == "approved from the dashboard test"
    assert p["status"] in ("approved", "applied")

    browser.wait_for("document.querySelector('#trend svg path.series') !== null", timeout_s=20)
    shot = tmp_path / "dashboard.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000
    if os.environ.get("SXTWIN_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, DOCS / "dashboard.png")
