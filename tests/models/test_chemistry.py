"""Distribution equilibria (models.chemistry) and element/oxide conversions (models.elements).

Every expected number here is computed by hand in the test from the formula and the source
values typed in, so a change to a data file or to the chemistry shows up as a failure.
"""

from __future__ import annotations

import math

import casadi as ca
import pytest

from models.chemistry import (
    SULFATE_KA2_MOL_PER_L,
    Medium,
    acidity_total,
    anion_concentration,
    ln_distribution,
)
from models.elements import (
    RARE_EARTHS,
    composition_oxide_pct_to_mole_fractions,
    mole_fractions_to_oxide_pct,
    oxide_mass_per_mol_element_g,
    reo_mass_g,
    reo_purity,
)
from models.errors import ParameterError, UnknownElementError
from models.feeds import load_feed
from models.parameters import load_system
from models.units import REFERENCE_TEMPERATURE_K

# Tanaka et al. (2021) `a` values as shipped in p507_t21_nitrate.csv (log10 D at pH 0, 0.5 M dimer)
T21_A = {"La": -4.0795, "Nd": -3.0776, "Tb": -0.9825, "Dy": -0.3905, "Y": 0.1058}


def log10_d(system_key: str, symbols: list[str], x: list[float], ph: float, free_dimer: float,
            extractant_mol_per_l: float = 1.0, temperature_k: float = REFERENCE_TEMPERATURE_K,
            ) -> dict[str, float]:
    system = load_system(system_key)
    ln_d = ln_distribution(
        system, symbols, ca.DM([math.log(v) for v in x]), -ph * math.log(10.0),
        math.log(free_dimer), temperature_k, extractant_mol_per_l,
    )
    return {s: float(v) / math.log(10.0) for s, v in zip(symbols, ca.vertsplit(ln_d), strict=True)}


@pytest.mark.parametrize("ph", [0.2, 0.8, 1.5, 2.4])
def test_t21_trace_limit_is_a_plus_3_ph_at_1_molar(ph: float) -> None:
    # C = 1 M formal, trace loading: free dimer f = 0.5 M = C_ref, so the extractant term and the
    # Alstad correction vanish and log10 D = a + 3 pH exactly.
    symbols = list(T21_A)
    got = log10_d("P507-T21", symbols, [1e-9] * len(symbols), ph, 0.5)
    for s in symbols:
        assert got[s] == pytest.approx(T21_A[s] + 3.0 * ph, abs=1e-12)


def test_separation_factor_independent_of_ph_for_equal_stoichiometry() -> None:
    betas = []
    for ph in (0.3, 0.9, 1.6, 2.2):
        for f in (0.5, 0.3, 0.05):
            got = log10_d("P507-T21", ["Tb", "Dy"], [1e-3, 1e-3], ph, f)
            betas.append(got["Dy"] - got["Tb"])
    assert max(betas) - min(betas) < 1e-12
    assert betas[0] == pytest.approx(T21_A["Dy"] - T21_A["Tb"], abs=1e-12)


def test_sulfate_speciation_bisulfate_fraction_and_titratable_acidity() -> None:
    ka2 = 10.0**-1.99
    assert ka2 == pytest.approx(SULFATE_KA2_MOL_PER_L, rel=1e-15)
    for h in (1e-3, 10.0**-1.99, 0.05, 0.3):
        x, z = [0.02, 0.01], [3.0, 2.0]
        total_sulfate = float(anion_concentration(Medium.SULFATE, h, x, z))
        # electroneutrality: H+ + sum z x = [HSO4-] + 2 [SO4 2-] = S (h + 2 Ka2) / (h + Ka2)
        assert h + 0.08 == pytest.approx(total_sulfate * (h + 2 * ka2) / (h + ka2), rel=1e-13)
        bisulfate = float(acidity_total(Medium.SULFATE, h, x, z)) - h
        assert bisulfate / total_sulfate == pytest.approx(h / (h + ka2), rel=1e-13)
    assert float(acidity_total(Medium.CHLORIDE, 0.1, [0.02], [3.0])) == 0.1


def test_empirical_family_reproduces_the_d2ehpa_correlation_by_hand() -> None:
    # UKy Phase 1 fits via PrOMMiS: log10 D = (m0 + m1 dosage) pH + B0 + B1 log10(dosage)
    coef = {"Nd": (0.31183, 0.03763, -1.62372, -0.38096),
            "Dy": (1.70783, 0.06443, -2.42226, -0.02538),
            "Y": (1.63166, 0.15166, -2.12601, 0.26612),
            "La": (0.54, 0.0, -1.93, 0.0)}
    dosage = 5.0  # vol %
    c_mol_per_l = dosage / 100.0 * 0.97 * 1000.0 / 322.43  # density and molar mass of the file
    for ph in (0.5, 1.0, 1.5):
        got = log10_d("D2EHPA-H2SO4", [*coef, "Fe", "Ca"], [1e-3] * 6, ph, 0.5, c_mol_per_l)
        for s, (m0, m1, b0, b1) in coef.items():
            assert got[s] == pytest.approx((m0 + m1 * dosage) * ph + b0 + b1 * math.log10(dosage),
                                           abs=1e-9)
        assert 10.0 ** got["Fe"] == pytest.approx(0.1496, rel=1e-5)  # constant D (REESim)
        assert 10.0 ** got["Ca"] == pytest.approx(0.0658, rel=1e-5)
    # the documented caveat: these fits put Nd below Pr (group recovery only)
    at_ph1 = log10_d("D2EHPA-H2SO4", ["Pr", "Nd"], [1e-3, 1e-3], 1.0, 0.5, c_mol_per_l)
    assert at_ph1["Nd"] < at_ph1["Pr"]


def test_naphthenic_acid_returns_table_4_36_at_its_anchor() -> None:
    # Z1 Table 4.36 system 1: 0.45 M HA, pH 4.19; free dimer 0.225 M at trace loading
    got = log10_d("NAPHTHENIC-HCl", ["Y", "Sm", "Lu"], [1e-9] * 3, 4.19, 0.225, 0.45)
    assert 10.0 ** got["Y"] == pytest.approx(0.117, rel=1e-3)
    assert 10.0 ** got["Sm"] == pytest.approx(0.619, rel=1e-3)
    assert 10.0 ** got["Lu"] == pytest.approx(0.232, rel=1e-3)
    system = load_system("NAPHTHENIC-HCl")
    d = {s: system.elements[s].log10_k for s in RARE_EARTHS}
    assert min(d, key=d.__getitem__) == "Y"  # the industrial route to pure Y


def test_d2ehpa_chloride_uses_the_fitted_exponent() -> None:
    base = log10_d("D2EHPA-HCl", ["Y"], [1e-9], 1.0, 0.5)["Y"]
    low = log10_d("D2EHPA-HCl", ["Y"], [1e-9], 1.0, 0.05)["Y"]
    assert base - low == pytest.approx(2.38, abs=1e-12)
    assert base == pytest.approx(2.1942 + 3.0, abs=1e-12)


def test_ln_distribution_refuses_an_element_without_parameters() -> None:
    with pytest.raises(ParameterError) as exc:
        log10_d("CYANEX272-HCl", ["Dy", "Ho"], [1e-3, 1e-3], 2.0, 0.3)
    assert exc.value.field == "elements[1]"
    assert "'Ho' has no parameters in system 'CYANEX272-HCl'" in exc.value.message
    assert "Dy" in exc.value.message.split("elements with parameters:")[1]


def test_ln_distribution_refuses_an_unknown_element() -> None:
    with pytest.raises(UnknownElementError) as exc:
        log10_d("P507-T21", ["Xx"], [1e-3], 1.0, 0.5)
    assert "unknown element 'Xx'" in exc.value.message
    assert "La" in exc.value.message
    assert "Lu" in exc.value.message


# --- oxides, TREO and purity ---------------------------------------------------------------

def test_one_mole_dysprosium_is_186_5_g_dy2o3() -> None:
    assert oxide_mass_per_mol_element_g("Dy") == pytest.approx(186.5, abs=0.01)
    assert reo_mass_g({"Dy": 1.0})["Dy"] == pytest.approx(162.50 + 1.5 * 15.999, abs=1e-9)


def test_tb4o7_and_pr6o11_stoichiometry() -> None:
    # Tb4O7: 4 Tb + 7 O, so one mole Tb carries 7/4 mol O; Pr6O11: 11/6 mol O per mol Pr
    tb, pr = oxide_mass_per_mol_element_g("Tb"), oxide_mass_per_mol_element_g("Pr")
    assert tb == pytest.approx(158.93 + 7.0 / 4.0 * 15.999, abs=1e-9)
    assert pr == pytest.approx(140.91 + 11.0 / 6.0 * 15.999, abs=1e-9)
    assert oxide_mass_per_mol_element_g("Ce") == pytest.approx(140.12 + 2.0 * 15.999, abs=1e-9)
    assert 4 * oxide_mass_per_mol_element_g("Tb") == pytest.approx(747.71, abs=0.01)  # M(Tb4O7)


def test_treo_percent_mole_fraction_round_trip() -> None:
    pct = load_feed("makuutu_like").oxide_pct_treo()
    fractions = composition_oxide_pct_to_mole_fractions(pct)
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-14)
    back = mole_fractions_to_oxide_pct(fractions)
    for s, p in pct.items():
        assert back[s] == pytest.approx(p, rel=1e-12)
    # Y2O3 (113.9 g per mol Y) is lighter per mole than Yb2O3 (197.0): Y's mole share is larger
    assert fractions["Y"] / fractions["Yb"] > pct["Y"] / pct["Yb"]


def test_reo_purity_is_oxide_mass_share() -> None:
    moles = {"Dy": 0.995, "Tb": 0.004, "Ho": 0.001, "Na": 5.0}  # Na is not in TREO
    mass = {s: n * oxide_mass_per_mol_element_g(s) for s, n in moles.items() if s != "Na"}
    assert reo_purity(moles, "Dy") == pytest.approx(mass["Dy"] / sum(mass.values()), rel=1e-14)
    assert reo_purity(moles, ["Dy", "Tb"]) > reo_purity(moles, "Dy")
    assert reo_purity({"Na": 1.0}, "Dy") == 0.0
    with pytest.raises(UnknownElementError):
        reo_purity(moles, "Xx")


def test_composition_refuses_negative_share() -> None:
    with pytest.raises(UnknownElementError) as exc:
        composition_oxide_pct_to_mole_fractions({"Dy": -1.0, "Tb": 2.0})
    assert exc.value.field == "composition.Dy"
