"""The one internal unit system of sxtwin, and the conversions used at the edges.

Internal units (every quantity inside ``models``, ``twin`` and ``opcua`` uses these):

=====================  =============  =====================================================
quantity               unit           field-name suffix
=====================  =============  =====================================================
amount concentration   mol/L          ``_mol_per_l``
volumetric flow        L/h            ``_l_per_h``
volume                 L              ``_l``
time                   h              ``_h``
temperature            K              ``_k``
mass                   kg             ``_kg``
money                  USD            ``_usd``
fractions              1 (0-1)        (purity, recovery, efficiency, saponification degree)
=====================  =============  =====================================================

Extractant concentrations are formal *monomer* mol/L (1 M P507 = 1 mol HA per litre of organic);
dimer concentrations and vol % are converted here, at the edge. Conversions take and return
plain floats; the names say both units.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "G_PER_KG",
    "HOURS_PER_DAY",
    "HOURS_PER_YEAR",
    "KELVIN_AT_0C",
    "L_PER_M3",
    "REFERENCE_TEMPERATURE_K",
    "SECONDS_PER_HOUR",
    "celsius_to_kelvin",
    "dimer_to_monomer_mol_per_l",
    "h_mol_per_l_to_ph",
    "kelvin_to_celsius",
    "m3_per_h_to_l_per_h",
    "monomer_to_dimer_mol_per_l",
    "ph_to_h_mol_per_l",
    "vol_pct_to_mol_per_l",
]

L_PER_M3: Final = 1000.0
G_PER_KG: Final = 1000.0
SECONDS_PER_HOUR: Final = 3600.0
HOURS_PER_DAY: Final = 24.0
HOURS_PER_YEAR: Final = 8760.0  # 365 days, for rates quoted per year
KELVIN_AT_0C: Final = 273.15
REFERENCE_TEMPERATURE_K: Final = 298.15


def celsius_to_kelvin(t_c: float) -> float:
    """Temperature in degC to K."""
    return t_c + KELVIN_AT_0C


def kelvin_to_celsius(t_k: float) -> float:
    """Temperature in K to degC."""
    return t_k - KELVIN_AT_0C


def m3_per_h_to_l_per_h(q_m3_per_h: float) -> float:
    """Flow in m3/h to L/h."""
    return q_m3_per_h * L_PER_M3


def dimer_to_monomer_mol_per_l(c_dimer: float) -> float:
    """Extractant as dimer (HA)2 mol/L to formal monomer HA mol/L."""
    return 2.0 * c_dimer


def monomer_to_dimer_mol_per_l(c_monomer: float) -> float:
    """Extractant as formal monomer HA mol/L to dimer (HA)2 mol/L."""
    return 0.5 * c_monomer


def vol_pct_to_mol_per_l(vol_pct: float, molar_mass_g_per_mol: float, density_kg_per_l: float) -> float:
    """Extractant dosage in vol % of the organic to formal monomer mol/L.

    ``c = vol_pct/100 * density * 1000 / molar_mass`` (pure extractant density in kg/L).
    """
    return vol_pct / 100.0 * density_kg_per_l * 1000.0 / molar_mass_g_per_mol


def ph_to_h_mol_per_l(ph: float) -> float:
    """pH on the concentration scale to [H+] in mol/L."""
    return float(10.0 ** (-ph))


def h_mol_per_l_to_ph(h_mol_per_l: float) -> float:
    """[H+] in mol/L to pH on the concentration scale."""
    return -math.log10(h_mol_per_l)
