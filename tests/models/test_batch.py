"""Single-contact equilibrium (models.batch.batch_equilibrium): limits, balances, saturation,
saponification and bad input. Balances are recomputed here from the returned phases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models._newton import NewtonOptions
from models.batch import AqueousPhase, BatchResult, OrganicPhase, batch_equilibrium
from models.chemistry import acidity_total
from models.elements import element
from models.errors import InputError, ParameterError, UnknownElementError
from models.parameters import load_system

T21_A = {"Tb": -0.9825, "Dy": -0.3905, "Lu": 1.6589}
TIGHT = NewtonOptions(tol=1e-13)
"""Solve to round-off so that balances can be checked at 1e-12."""


def proton_balance_residual(key: str, feed: AqueousPhase, org: OrganicPhase, r: float,
                            res: BatchResult) -> float:
    """Titratable acidity minus protons carried by the organic, after minus before, relative."""
    system = load_system(key)
    syms = res.aqueous.names
    charges = [float(element(s).charge) for s in syms]
    release = system.proton_release(syms)
    y0 = dict(org.loading_mol_per_l)
    if org.saponification:
        y0["Na"] = y0.get("Na", 0.0) + org.saponification * org.extractant_mol_per_l
    # the feed acidity is titratable (free H+ plus HSO4- in sulfate), as AqueousPhase documents
    before = (feed.acidity_mol_per_l
              - r * sum(q * y0.get(s, 0.0) for q, s in zip(release, syms, strict=True)))
    after = (float(acidity_total(system.medium, res.acidity_mol_per_l, list(res.aqueous.values),
                                 charges))
             - r * sum(q * res.organic[s] for q, s in zip(release, syms, strict=True)))
    scale = feed.acidity_mol_per_l + r * sum(q * res.organic[s] for q, s in
                                             zip(release, syms, strict=True))
    return abs(after - before) / scale


def test_trace_loading_limit_of_mass_action() -> None:
    # 1 M P507 (0.5 M dimer = C_ref), trace Dy: free dimer stays 0.5 and the acidity unchanged,
    # so log10 D = a + 3 pH to the size of the perturbation (1e-9 M RE against 0.5 M dimer)
    res = batch_equilibrium(load_system("P507-T21"), AqueousPhase({"Dy": 1e-9}, 0.1),
                            OrganicPhase(1.0))
    assert res.free_dimer_mol_per_l == pytest.approx(0.5, rel=1e-8)
    assert math.log10(res.distribution["Dy"]) == pytest.approx(T21_A["Dy"] + 3.0 * res.ph,
                                                               abs=1e-7)
    assert res.ph == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("o_to_a", [0.5, 1.0, 2.0])
def test_proton_and_extractant_balances_close_to_round_off(o_to_a: float) -> None:
    system = load_system("P507-T21")
    feed = AqueousPhase({"Tb": 0.05, "Dy": 0.05, "Ho": 0.02}, 0.1)
    org = OrganicPhase(1.0)
    res = batch_equilibrium(system, feed, org, o_to_a=o_to_a, options=TIGHT)
    bound = sum(system.parameters_for(s).dimers_per_ion * res.organic[s] for s in res.organic)
    assert (res.free_dimer_mol_per_l + bound) / 0.5 - 1.0 == pytest.approx(0.0, abs=1e-12)
    assert proton_balance_residual("P507-T21", feed, org, o_to_a, res) < 1e-12
    for s in res.aqueous.names:
        total = feed.concentrations_mol_per_l[s]
        assert res.aqueous[s] + o_to_a * res.organic[s] == pytest.approx(total, rel=1e-12)


def test_sulfate_batch_conserves_titratable_acidity() -> None:
    key = "D2EHPA-H2SO4"
    feed = AqueousPhase({"Nd": 0.002, "Dy": 0.002, "Y": 0.003, "Fe": 0.001, "Ca": 0.004}, 0.05)
    org = OrganicPhase(0.15)
    res = batch_equilibrium(load_system(key), feed, org, o_to_a=1.5, options=TIGHT)
    assert proton_balance_residual(key, feed, org, 1.5, res) < 1e-12
    # the free acidity is below the titratable acidity: part of it is HSO4-
    assert res.acidity_mol_per_l < 0.05 + 1.5 * 3 * res.organic["Dy"] + 1.5 * 3 * res.organic["Y"]


def test_saturation_loading_approaches_but_never_exceeds_capacity() -> None:
    system = load_system("P507-T21")
    capacity = 1.0 / 6.0  # C_HA/6 for 1 M P507
    loads, free = [], []
    for feed_m in (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0):
        res = batch_equilibrium(system, AqueousPhase({"Lu": feed_m}, 0.001), OrganicPhase(1.0))
        loads.append(res.organic["Lu"])
        free.append(res.free_dimer_mol_per_l)
        assert res.organic["Lu"] < capacity
        assert 0.0 < res.loading_fraction < 1.0
    assert all(np.diff(loads) > 0)
    assert all(np.diff(free) < 0)
    assert loads[-1] > 0.95 * capacity
    assert free[-1] < 0.04 * 0.5  # free extractant -> 0


@pytest.mark.parametrize("acidity", [0.03, 0.1, 0.3, 1.0])
def test_separation_factor_independent_of_acidity(acidity: float) -> None:
    res = batch_equilibrium(load_system("P507-T21"), AqueousPhase({"Tb": 0.05, "Dy": 0.05},
                                                                  acidity), OrganicPhase(1.0))
    beta = res.distribution["Dy"] / res.distribution["Tb"]
    assert beta == pytest.approx(10.0 ** (T21_A["Dy"] - T21_A["Tb"]), rel=1e-10)


def test_saponification_exchanges_na_for_rare_earth() -> None:
    system = load_system("P507-T21")
    feed = AqueousPhase({"Dy": 0.2}, 0.01)
    org = OrganicPhase(1.0, saponification=0.5)
    res = batch_equilibrium(system, feed, org, options=TIGHT)
    # Na leaves the organic; charge released to the aqueous (Na+ plus H+) balances 3 x RE taken up
    assert res.aqueous["Na"] > 0.3
    released = res.aqueous["Na"] + (res.acidity_mol_per_l - feed.acidity_mol_per_l)
    assert released == pytest.approx(3.0 * res.organic["Dy"], rel=1e-10)
    assert proton_balance_residual("P507-T21", feed, org, 1.0, res) < 1e-12


def test_saponified_organic_apparent_ph_slope_far_below_three() -> None:
    # Fixed feed (0.2 M Dy) and saponified organic (50 % of 1 M P507): the organic is held near
    # saturation by the pre-loaded Na, so D barely follows the equilibrium pH as the feed acidity
    # changes, unlike the slope 3 of mass action at trace loading.
    system = load_system("P507-T21")
    ph, log_d = [], []
    for acidity in (0.1, 0.03, 0.01, 0.003, 0.001):
        res = batch_equilibrium(system, AqueousPhase({"Dy": 0.2}, acidity),
                                OrganicPhase(1.0, saponification=0.5))
        ph.append(res.ph)
        log_d.append(math.log10(res.distribution["Dy"]))
    slope = np.polyfit(ph, log_d, 1)[0]
    assert max(ph) - min(ph) > 1.0
    assert 0.0 < slope < 0.5
    trace_ph, trace_log_d = [], []
    for acidity in (0.3, 0.1, 0.03):
        res = batch_equilibrium(system, AqueousPhase({"Dy": 1e-9}, acidity), OrganicPhase(1.0))
        trace_ph.append(res.ph)
        trace_log_d.append(math.log10(res.distribution["Dy"]))
    assert np.polyfit(trace_ph, trace_log_d, 1)[0] == pytest.approx(3.0, abs=1e-6)


def test_saponification_unsupported_where_no_counter_ion_is_sourced() -> None:
    with pytest.raises(ParameterError) as exc:
        batch_equilibrium(load_system("NAPHTHENIC-HCl"), AqueousPhase({"Y": 0.1}, 1e-4),
                          OrganicPhase(0.45, saponification=0.8))
    assert "'Na' has no parameters in system 'NAPHTHENIC-HCl'" in exc.value.message


# --- bad input ---------------------------------------------------------------------------

def test_unknown_element() -> None:
    with pytest.raises(UnknownElementError) as exc:
        AqueousPhase({"Xx": 0.1}, 0.1)
    assert exc.value.field == "aqueous.concentrations.Xx"
    assert "allowed: La, Ce" in exc.value.message


def test_element_without_parameters_in_the_system() -> None:
    with pytest.raises(ParameterError) as exc:
        batch_equilibrium(load_system("CYANEX272-HCl"), AqueousPhase({"Dy": 0.01, "Er": 0.01},
                                                                     0.01), OrganicPhase(0.6))
    assert exc.value.field == "elements[1]"
    assert "'Er' has no parameters" in exc.value.message
    assert "elements with parameters: La" in exc.value.message


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_negative_or_nan_concentration(bad: float) -> None:
    with pytest.raises(InputError) as exc:
        AqueousPhase({"Dy": bad}, 0.1)
    assert exc.value.field == "aqueous.concentrations.Dy"
    assert "expected a finite concentration >= 0 mol/L" in exc.value.message


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_bad_phase_ratio(bad: float) -> None:
    with pytest.raises(InputError) as exc:
        batch_equilibrium(load_system("P507-T21"), AqueousPhase({"Dy": 0.01}, 0.1),
                          OrganicPhase(1.0), o_to_a=bad)
    assert exc.value.field == "o_to_a"
    assert "expected a finite phase ratio > 0" in exc.value.message


@pytest.mark.parametrize(("field", "kwargs"), [
    ("organic.extractant_mol_per_l", {"extractant_mol_per_l": 0.0}),
    ("organic.saponification", {"extractant_mol_per_l": 1.0, "saponification": 1.0}),
])
def test_bad_organic(field: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(InputError) as exc:
        OrganicPhase(**kwargs)
    assert exc.value.field == field
