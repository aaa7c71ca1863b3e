"""The shipped chemistry systems of issue 2 load with the parameters their sources give."""

from __future__ import annotations

import math

import pytest

from models.chemistry import Family, Medium
from models.elements import RARE_EARTHS
from models.parameters import available_systems, load_system

CIAAW = {"C": 12.011, "H": 1.008, "O": 15.999, "P": 30.974}


@pytest.mark.parametrize("key", ["D2EHPA-H2SO4", "NAPHTHENIC-HCl", "D2EHPA-HCl", "CYANEX272-HCl"])
def test_system_is_registered_and_loads(key: str) -> None:
    assert key in available_systems()
    system = load_system(key)
    assert system.elements
    assert system.valid_ph[0] < system.valid_ph[1]
    assert all(p.source for p in system.provenance.values())


def test_d2ehpa_sulfate_mapping_and_constant_species() -> None:
    s = load_system("D2EHPA-H2SO4")
    assert (s.family, s.medium) == (Family.EMPIRICAL, Medium.SULFATE)
    dy = s.elements["Dy"]
    assert (dy.log10_k, dy.ph_slope, dy.extractant_order, dy.dosage_coefficient) == (
        -2.42226, 1.70783, 0.06443, -0.02538)
    for sym, d in {"Sc": 632.4976, "Al": 0.0531, "Ca": 0.0658, "Fe": 0.1496}.items():
        assert s.elements[sym].constant
        assert 10.0 ** s.elements[sym].log10_k == pytest.approx(d, rel=1e-5)  # 6 decimals
    assert s.elements["Ca"].protons_released == 2.0
    molar_mass = 16 * CIAAW["C"] + 35 * CIAAW["H"] + 4 * CIAAW["O"] + CIAAW["P"]
    assert s.extractant.molar_mass_g_per_mol == pytest.approx(molar_mass, abs=0.005)
    assert s.extractant.density_kg_per_l == 0.97


def test_naphthenic_acid_reference_is_half_molar_monomer_as_dimer() -> None:
    s = load_system("NAPHTHENIC-HCl")
    assert set(s.elements) == set(RARE_EARTHS)
    assert s.c_ref_dimer_mol_per_l == 0.25  # 0.5 M formal HA
    assert "Na" not in s.elements  # saponified use documented as unsupported
    assert s.valid_ph[0] <= 4.19 <= s.valid_ph[1]


def test_d2ehpa_chloride_and_cyanex() -> None:
    d2 = load_system("D2EHPA-HCl")
    assert set(d2.elements) == set(RARE_EARTHS)
    assert {p.extractant_order for p in d2.elements.values()} == {2.38}
    assert d2.elements["Ho"].log10_k == pytest.approx(1.0387 + (-25.696 + 0.3977 * 67), abs=1e-4)
    cy = load_system("CYANEX272-HCl")
    assert not {"Ho", "Er", "Tm", "Yb", "Lu"} & set(cy.elements)
    assert math.log10(10 ** (cy.elements["Y"].log10_k - cy.elements["La"].log10_k)) == (
        pytest.approx(4.369, abs=1e-3))
