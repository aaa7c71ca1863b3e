"""Calibration of mass-action chemistry against batch equilibrium data (models.calibration,
models.equilibrium_data) and the shipped P507-HCl set it produces.

Expected figures on the LLEPE data are the ones documented in docs/calibration.md; a change in
the data, the model or the fit shows up here first.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import casadi as ca
import numpy as np
import pytest

from models._system_writer import catalogue_entry_toml, system_csv_text
from models.calibration import (
    NEA_SIT_RE3_CHLORIDE,
    ZHAO86_HCL_ACTIVITY,
    CalibrationOptions,
    ShiftRule,
    Weighting,
    calibrate,
    extend_by_shift,
    predict_log10_d,
)
from models.chemistry import CationActivity, ChemistrySystem, Medium, ln_distribution
from models.equilibrium_data import (
    EquilibriumData,
    EquilibriumPoint,
    load_llepe_data,
    parse_llepe_csv,
    screen_points,
)
from models.errors import (
    ConvergenceError,
    DataFileError,
    InputError,
    ParameterError,
    UnknownElementError,
)
from models.parameters import load_system, load_system_file
from models.provenance import ProvenanceClass

FITTED = ("La", "Ce", "Pr", "Nd", "Sm", "Dy", "Y")
HEADER = (
    "label,Feed H+[M],Feed H+[M].1,PC88A[M],PC88A[M].1,"
    "Feed Nd[M],Xaq Nd,D Nd,Feed Pr[M],Xaq Pr,D Pr"
)
ROW_A = "Study A,0.05,0.05,1,1,0.05,0.04,0.25,0.02,0.0175,0.142857"
ROW_B = "Study B,0.10,0.10,1,1,0.05,0.045,0.111111,0.02,0.019,0.052632"


@pytest.fixture(scope="module")
def llepe() -> EquilibriumData:
    return load_llepe_data()


@pytest.fixture(scope="module")
def t21() -> ChemistrySystem:
    return load_system("P507-T21")


# --- HCl activity: Zhao & Lei (1986) against Hamer & Wu (1972) ---------------------------------

# Mean activity coefficient of HCl at 25 degC, CRC Handbook 92nd ed. "Mean activity coefficients
# of electrolytes as a function of concentration" (Hamer & Wu 1972, source key HAMER72), as
# transcribed in pyEQL's tests/test_activity.py (test_activity_crc_HCl). Only molalities inside
# the correlation's 0.18-15 mol/kg range are used.
HAMER_WU_HCL = {0.2: 0.768, 0.5: 0.759, 1.0: 0.811, 2.0: 1.009, 5.0: 2.380}


@pytest.mark.parametrize(("molality", "gamma"), sorted(HAMER_WU_HCL.items()))
def test_zhao86_hcl_activity_matches_hamer_wu_table(molality: float, gamma: float) -> None:
    # Zhao & Lei state deviations below 1.2 %; the table has three decimals.
    got = math.exp(float(ZHAO86_HCL_ACTIVITY.ln_gamma(molality)))
    assert got == pytest.approx(gamma, rel=0.012)


def test_zhao86_coefficients_are_the_published_ones() -> None:
    a = ZHAO86_HCL_ACTIVITY
    assert (a.a, a.b, a.poly) == (0.5115, 1.471, (0.1069, 7.412e-3, -6.637e-4, 1.586e-5))
    m = 4.0  # by hand: log10 gamma = -0.5115*2/(1+1.471*2) + 0.1069*4 + 7.412e-3*16 - ...
    log10_g = -0.5115 * 2 / (1 + 1.471 * 2) + 0.1069 * 4 + 7.412e-3 * 16 - 6.637e-4 * 64
    log10_g += 1.586e-5 * 256
    assert float(a.ln_gamma(m)) / math.log(10) == pytest.approx(log10_g, abs=1e-12)


# --- data loader ------------------------------------------------------------------------------


def test_llepe_file_gives_259_points_and_counts_the_below_detection_ones(
    llepe: EquilibriumData,
) -> None:
    assert llepe.n_rows == 215
    assert len(llepe.points) == 259
    assert llepe.elements == ("La", "Ce", "Pr", "Nd", "Sm", "Dy", "Y")
    assert len(llepe.sources) == 7
    assert len([p for p in llepe.points if p.source == "Li (1987)"]) == 140
    (below,) = llepe.excluded
    assert below.count == 6
    assert dict(below.by_element) == {"Nd": 3, "Pr": 3}
    assert llepe.sources_of("Dy") == ("Li (1987)",)


def test_equilibrium_state_follows_the_balances_at_unit_phase_ratio(
    llepe: EquilibriumData,
) -> None:
    # Line 2 (Formiga 2016): h0 = 0.316227766 M, 1 M PC88A; Nd, Pr, Ce, La in the feed.
    row = [p for p in llepe.points if p.row == 2]
    assert {p.element for p in row} == {"Nd", "Pr", "Ce", "La"}
    y = (
        0.036106489 * 0.075268817
        + 0.010673654 * 0.063829787
        + 0.102323789 * 0.018329939
        + 0.046466843 * 0.007049345
    )
    for p in row:
        assert p.acidity_mol_per_l == pytest.approx(0.316227766 + 3 * y, rel=1e-12)
        assert p.free_dimer_mol_per_l == pytest.approx(0.5 - 3 * y, rel=1e-12)
        assert p.extractant_mol_per_l == 1.0
    nd = next(p for p in row if p.element == "Nd")
    assert nd.log10_d == pytest.approx(math.log10(0.075268817))
    assert nd.aqueous_mol_per_l["Ce"] == 0.102323789


def test_small_file_parses(tmp_path: Path) -> None:
    data = parse_llepe_csv("\n".join([HEADER, ROW_A, ROW_B]) + "\n", where="small.csv")
    assert [(p.source, p.element) for p in data.points] == [
        ("Study A", "Nd"),
        ("Study A", "Pr"),
        ("Study B", "Nd"),
        ("Study B", "Pr"),
    ]
    assert data.medium is Medium.CHLORIDE


@pytest.mark.parametrize(
    ("text", "error", "needles"),
    [
        (HEADER + "\n" + ROW_A + ",0.1\n", DataFileError, ["line 2", "12 fields", "11"]),
        (
            HEADER + "\n" + ROW_A.replace("0.04,", "-0.04,") + "\n",
            DataFileError,
            ["line 2", "'Xaq Nd'", "negative"],
        ),
        (
            HEADER + "\n" + ROW_A.replace("0.04,", "nan,") + "\n",
            DataFileError,
            ["line 2", "'Xaq Nd'", "finite"],
        ),
        (
            HEADER + "\n" + ROW_A.replace("0.04,", "abc,") + "\n",
            DataFileError,
            ["line 2", "'Xaq Nd'", "not a number"],
        ),
        (
            HEADER + ",Feed Zz[M],Xaq Zz,D Zz\n" + ROW_A + ",0,0,0\n",
            UnknownElementError,
            ["'Feed Zz[M]'", "unknown element 'Zz'"],
        ),
        (HEADER + ",pH\n" + ROW_A + ",1\n", DataFileError, ["unknown column 'pH'"]),
        (
            HEADER.replace(",D Pr", "") + "\n" + ROW_A.rsplit(",", 1)[0] + "\n",
            DataFileError,
            ["element Pr lacks", "'D Pr'"],
        ),
        (
            HEADER.replace("label,", "study,") + "\n" + ROW_A + "\n",
            DataFileError,
            ["missing column 'label'"],
        ),
        (
            HEADER + "\n" + ROW_A.replace("0.25,", "0.5,") + "\n",
            DataFileError,
            ["line 2", "'D Nd'", "disagrees"],
        ),
        (
            HEADER + "\n" + ROW_A.replace(",1,1,", ",0,0,") + "\n",
            DataFileError,
            ["'PC88A[M]'", "> 0"],
        ),
        (HEADER + "\n", DataFileError, ["no data rows"]),
        ("", DataFileError, ["empty file"]),
    ],
)
def test_bad_files_name_the_line_and_column(
    text: str, error: type[Exception], needles: list[str]
) -> None:
    with pytest.raises(error) as info:
        parse_llepe_csv(text, where="bad.csv")
    message = str(info.value)
    assert "bad.csv" in message
    for needle in needles:
        assert needle in message


def test_reliability_screen_counts_what_it_drops(llepe: EquilibriumData) -> None:
    kept, dropped = screen_points(llepe.points, 0.02, 0.98)
    assert dropped is not None
    assert (len(kept), dropped.count) == (249, 10)
    assert all(0.02 <= p.extracted_fraction <= 0.98 for p in kept)
    assert screen_points(llepe.points, 0.0, 1.0)[1] is None
    with pytest.raises(InputError, match="min_extracted_fraction"):
        screen_points(llepe.points, 0.6, 0.98)


# --- synthetic recovery -----------------------------------------------------------------------


def _synthetic(
    t21: ChemistrySystem, seed: int, offsets: dict[str, float] | None = None
) -> tuple[EquilibriumData, ChemistrySystem]:
    """60 contacts x 3 elements generated with the model itself at known a and n, plus
    Gaussian noise of 0.05 in log10 D (and optional per-study level offsets)."""
    true = t21.with_elements(
        {
            s: dataclasses.replace(
                t21.elements[s], log10_k=t21.elements[s].log10_k + 0.5, extractant_order=2.5
            )
            for s in ("La", "Nd", "Dy")
        }
    )
    rng = np.random.default_rng(seed)
    points = []
    for study in ("A", "B", "C"):
        for j in range(20):
            h = 10 ** rng.uniform(-2.0, -0.3)
            f = rng.uniform(0.1, 0.6)
            state = {"La": 0.01, "Nd": 0.01, "Dy": 0.01}
            for s in state:
                points.append(EquilibriumPoint(study, s, j + 2, 1.0, state, h, f, 2 * f + 0.1, h))
    log10_d = predict_log10_d(true, points) + rng.normal(0.0, 0.05, len(points))
    if offsets:
        log10_d += np.array([offsets[p.source] for p in points])
    points = [
        dataclasses.replace(p, distribution=10**v) for p, v in zip(points, log10_d, strict=True)
    ]
    data = EquilibriumData("synthetic", "SXTWIN", Medium.NITRATE, 1.0, tuple(points), (), 60)
    return data, true


PLAIN = CalibrationOptions(
    fit_ph_slope=False,
    hcl_activity=False,
    re_activity=False,
    source_offsets=False,
    min_extracted_fraction=0.0,
    max_extracted_fraction=1.0,
)


def _expected_standard_errors(true: ChemistrySystem, data: EquilibriumData) -> np.ndarray:
    """sigma (J^T J)^-1/2 with J by central differences of the model (a_La, a_Nd, a_Dy, n)."""
    points = data.points
    names = [("La", "log10_k"), ("Nd", "log10_k"), ("Dy", "log10_k")]
    cols = []
    for sym, field in names:
        shifted = []
        for step in (1e-5, -1e-5):
            p = true.elements[sym]
            upd = {sym: dataclasses.replace(p, **{field: getattr(p, field) + step})}
            shifted.append(predict_log10_d(true.with_elements(upd), points))
        cols.append((shifted[0] - shifted[1]) / 2e-5)
    shifted = []
    for step in (1e-5, -1e-5):
        upd = {
            s: dataclasses.replace(true.elements[s], extractant_order=2.5 + step)
            for s in ("La", "Nd", "Dy")
        }
        shifted.append(predict_log10_d(true.with_elements(upd), points))
    cols.append((shifted[0] - shifted[1]) / 2e-5)
    jac = np.column_stack(cols)
    return 0.05 * np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)))


def test_recovers_known_parameters_within_three_standard_errors(t21: ChemistrySystem) -> None:
    data, true = _synthetic(t21, seed=7)
    result = calibrate(data, t21, PLAIN)
    assert result.success
    expected_se = _expected_standard_errors(true, data)
    names = ["log10_k.La", "log10_k.Nd", "log10_k.Dy", "extractant_order"]
    truth = [true.elements[s].log10_k for s in ("La", "Nd", "Dy")] + [2.5]
    for name, value, se_expected in zip(names, truth, expected_se, strict=True):
        se = result.std_errors[name]
        assert abs(result.parameters[name] - value) < 3 * se, name
        # s estimates the 0.05 noise from 176 degrees of freedom: within about 20 %
        assert se == pytest.approx(se_expected, rel=0.25), name
    assert result.residual_std == pytest.approx(0.05, rel=0.2)
    assert result.rmse.overall == pytest.approx(0.05, rel=0.2)
    assert result.cv_rmse.overall >= result.rmse.overall


def test_recovers_study_offsets_and_predicts_a_new_study_at_offset_zero(
    t21: ChemistrySystem,
) -> None:
    offsets = {"A": 0.3, "B": -0.1, "C": -0.2}  # sum zero, as the fit assumes
    data, true = _synthetic(t21, seed=3, offsets=offsets)
    result = calibrate(data, t21, dataclasses.replace(PLAIN, source_offsets=True))
    for study, value in offsets.items():
        name = f"offset[{study}]"
        assert abs(result.parameters[name] - value) < 3 * result.std_errors[name]
    for s in ("La", "Nd", "Dy"):
        name = f"log10_k.{s}"
        assert abs(result.parameters[name] - true.elements[s].log10_k) < 3 * result.std_errors[name]
    assert result.rmse.overall == pytest.approx(0.05, rel=0.25)
    # the saved system carries no offsets: its RMSE is that of the offsets themselves
    assert result.system_rmse.overall == pytest.approx(
        math.sqrt((0.09 + 0.01 + 0.04) / 3), abs=0.02
    )
    # every element has three studies: each is predicted as a new laboratory (offset 0) at the
    # level of the average of the other two, so study A is off by 0.3 - (-0.1 - 0.2)/2 = 0.45
    assert set(result.cv_scheme.values()) == {"leave-one-study-out (3 studies)"}
    assert result.cv_rmse.by_source["A"] == pytest.approx(0.45, abs=0.06)


def test_fit_failure_raises_convergence_error(t21: ChemistrySystem) -> None:
    data, _ = _synthetic(t21, seed=1)
    with pytest.raises(ConvergenceError, match="did not converge"):
        calibrate(data, t21, dataclasses.replace(PLAIN, max_iter=1))


def test_bad_options_and_systems_are_refused(llepe: EquilibriumData, t21: ChemistrySystem) -> None:
    with pytest.raises(InputError, match="relative_concentration_error"):
        CalibrationOptions(relative_concentration_error=0.0)
    with pytest.raises(InputError, match="cv_folds"):
        CalibrationOptions(cv_folds=1)
    without_y = dataclasses.replace(
        t21, elements={k: v for k, v in t21.elements.items() if k != "Y"}
    )
    with pytest.raises(ParameterError, match="'Y' has no parameters"):
        calibrate(llepe, without_y)
    with pytest.raises(ParameterError, match="mass_action"):
        calibrate(llepe, load_system("D2EHPA-H2SO4"))


# --- the LLEPE data: figures documented in docs/calibration.md --------------------------------


NO_SCREEN = {"min_extracted_fraction": 0.0, "max_extracted_fraction": 1.0}
EXPLORATORY = {**NO_SCREEN, "hcl_activity": False, "re_activity": False, "source_offsets": False}


@pytest.mark.parametrize(
    ("options", "rmse"),
    [
        ({**EXPLORATORY, "fit_ph_slope": False}, 0.526),
        ({**EXPLORATORY, "fit_ph_slope": True}, 0.426),
        ({**EXPLORATORY, "fit_ph_slope": True, "chloride_complexation": True}, 0.359),
    ],
)
def test_reproduces_the_exploratory_fits(
    llepe: EquilibriumData, t21: ChemistrySystem, options: dict[str, object], rmse: float
) -> None:
    # The scipy figures: 0.60 (literature), 0.52, 0.42, 0.36 on all 259 points.
    result = calibrate(llepe, t21, CalibrationOptions(**options))  # type: ignore[arg-type]
    assert result.n_points == 259
    assert result.baseline.overall == pytest.approx(0.598, abs=0.001)
    assert result.rmse.overall == pytest.approx(rmse, abs=0.001)


def test_default_fit_beats_the_literature_set_and_meets_the_target(
    llepe: EquilibriumData, t21: ChemistrySystem
) -> None:
    result = calibrate(llepe, t21)
    assert result.success
    assert result.options.re_activity
    assert result.options.hcl_activity
    assert result.n_points == 249
    assert sum(e.count for e in result.excluded) == 16  # 6 below detection + 10 screened
    assert result.baseline.overall == pytest.approx(0.602, abs=0.001)
    assert result.cv_rmse.overall == pytest.approx(0.429, abs=0.002)
    assert result.cv_rmse.overall < result.baseline.overall
    for el in FITTED:  # better than the literature set for every element, held out
        assert result.cv_rmse.by_element[el] < result.baseline.by_element[el], el
    # The target: overall RMSE below 0.25 (in-sample, per-study levels fitted); the set
    # as saved (no study levels) is at 0.410. See docs/calibration.md.
    assert result.rmse.overall == pytest.approx(0.2375, abs=0.001)
    assert result.rmse.overall < 0.25
    assert result.system_rmse.overall == pytest.approx(0.410, abs=0.002)
    assert result.parameters["extractant_order"] > 0.0
    assert result.parameters["ph_slope"] == pytest.approx(1.34, abs=0.01)
    assert not result.at_bounds
    assert sum(v for k, v in result.parameters.items() if k.startswith("offset[")) == (
        pytest.approx(0.0, abs=1e-8)
    )
    assert result.cv_scheme["Dy"].startswith("5-fold")
    assert result.cv_scheme["Nd"].startswith("leave-one-study-out")
    assert not np.isnan(result.cv_predicted_log10_d).any()


def test_fit_without_the_re_activity_term_misses_the_target(
    llepe: EquilibriumData, t21: ChemistrySystem
) -> None:
    # The previous default (the fit behind P507-HCl, the example plants' design basis).
    result = calibrate(llepe, t21, CalibrationOptions(re_activity=False))
    assert result.cv_rmse.overall == pytest.approx(0.500, abs=0.002)
    assert result.rmse.overall == pytest.approx(0.260, abs=0.002)
    assert result.system_rmse.overall == pytest.approx(0.499, abs=0.002)
    assert result.parameters["ph_slope"] == pytest.approx(1.86, abs=0.01)


def test_re_activity_is_the_sit_expression() -> None:
    # log10 gamma(M3+) = -9 * 0.509 sqrt(I)/(1 + 1.5 sqrt(I)) + 0.23 [Cl-], by hand at I = 4, Cl = 2
    expected = -9 * 0.509 * 2.0 / (1.0 + 3.0) + 0.23 * 2.0
    got = float(NEA_SIT_RE3_CHLORIDE.ln_gamma(4.0, 2.0)) / math.log(10.0)
    assert got == pytest.approx(expected, rel=1e-12)
    assert not CationActivity().active


def test_re_activity_enters_d_of_trivalent_ions_only() -> None:
    sit = load_system("P507-HCl-SIT")
    off = dataclasses.replace(sit, cation_activity=CationActivity())
    symbols = ("Na", "Nd")
    ln_x = ca.DM(np.log([0.1, 0.5]))
    h, f = 0.2, 0.3
    args = (symbols, ln_x, math.log(h), math.log(f), 298.15, 1.0)
    with_term = np.asarray(ln_distribution(sit, *args)).ravel()
    without = np.asarray(ln_distribution(off, *args)).ravel()
    ionic = h + 1.0 * 0.1 + 6.0 * 0.5  # I = h + sum z(z+1)/2 x
    chloride = h + 0.1 + 3.0 * 0.5
    assert with_term[0] == pytest.approx(without[0], abs=1e-12)  # Na+: no term
    assert with_term[1] - without[1] == pytest.approx(
        float(NEA_SIT_RE3_CHLORIDE.ln_gamma(ionic, chloride)), rel=1e-12
    )


def test_weighting_changes_the_fit(llepe: EquilibriumData, t21: ChemistrySystem) -> None:
    uniform = calibrate(llepe, t21, CalibrationOptions(source_offsets=False))
    weighted = calibrate(
        llepe, t21, CalibrationOptions(source_offsets=False, weighting=Weighting.ERROR_PROPAGATED)
    )
    assert weighted.parameters["ph_slope"] != pytest.approx(uniform.parameters["ph_slope"], abs=0.1)


def test_saved_system_round_trips_with_provenance(
    llepe: EquilibriumData, t21: ChemistrySystem, tmp_path: Path
) -> None:
    result = calibrate(llepe, t21)
    system = result.to_system("P507-TEST", date="2026-01-02", command="sxtwin calibrate x")
    (tmp_path / "t.csv").write_text(system_csv_text(system), encoding="utf-8")
    toml = catalogue_entry_toml(system, "t.csv", table=False, comments=["test"])
    (tmp_path / "t.toml").write_text(toml, encoding="utf-8")
    loaded = load_system_file(tmp_path / "t.toml")
    assert loaded.medium is Medium.CHLORIDE
    assert loaded.activity == ZHAO86_HCL_ACTIVITY
    np.testing.assert_allclose(
        predict_log10_d(loaded, result.points), result.system_log10_d, atol=1e-7
    )
    prov = loaded.provenance["log10_k.Nd"]
    assert prov.cls is ProvenanceClass.DERIVED
    assert prov.source == "LLEPE+SXTWIN"
    assert prov.locus.startswith("fit to 249 points from Banda (2014), ")
    assert "on 2026-01-02 with" in prov.locus
    assert "fit se" in prov.note


# --- the shipped P507-HCl set -----------------------------------------------------------------


@pytest.mark.parametrize(("key", "re_activity"), [("P507-HCl", False), ("P507-HCl-SIT", True)])
def test_shipped_p507_hcl_sets_are_the_documented_fits(
    llepe: EquilibriumData, t21: ChemistrySystem, key: str, re_activity: bool
) -> None:
    shipped = load_system(key)
    result = calibrate(llepe, t21, CalibrationOptions(re_activity=re_activity))
    assert shipped.cation_activity == (NEA_SIT_RE3_CHLORIDE if re_activity else CationActivity())
    for s in FITTED:
        assert shipped.elements[s].log10_k == pytest.approx(
            result.parameters[f"log10_k.{s}"], abs=1e-8
        )
        assert shipped.elements[s].extractant_order == pytest.approx(
            result.parameters["extractant_order"], abs=1e-8
        )
        assert shipped.elements[s].ph_slope == pytest.approx(
            result.parameters["ph_slope"], abs=1e-8
        )
    extended, _, shifts = extend_by_shift(
        result.to_system(key), t21, ("Eu", "Gd", "Tb", "Ho", "Er", "Tm", "Yb", "Lu", "Na")
    )
    for s in extended.elements:
        assert shipped.elements[s].log10_k == pytest.approx(extended.elements[s].log10_k, abs=1e-8)
    assert {sh.element for sh in shifts} == {"Eu", "Gd", "Tb", "Ho", "Er", "Tm", "Yb", "Lu"}


def test_shipped_p507_hcl_says_what_is_fitted_shifted_or_estimated(t21: ChemistrySystem) -> None:
    s = load_system("P507-HCl")
    assert s.medium is Medium.CHLORIDE
    assert s.activity == ZHAO86_HCL_ACTIVITY
    assert set(s.elements) == set(t21.elements)
    for el in FITTED:
        prov = s.provenance[f"log10_k.{el}"]
        assert (prov.cls, prov.source) == (ProvenanceClass.DERIVED, "LLEPE+SXTWIN")
        assert "fit se" in prov.note
    for el in ("Eu", "Gd", "Tb", "Ho", "Er", "Tm", "Yb", "Lu"):
        prov = s.provenance[f"log10_k.{el}"]
        assert prov.cls is t21.provenance[f"log10_k.{el}"].cls
        assert prov.cls in (ProvenanceClass.INTERPOLATED, ProvenanceClass.ESTIMATED)
        assert "shifted" in prov.note
        assert "shifted by" in prov.locus
    assert s.elements["Na"] == t21.elements["Na"]
    assert s.provenance["log10_k.Na"] == t21.provenance["log10_k.Na"]
    assert s.extractant == t21.extractant
    assert s.valid_ph[0] < 0.0 < 1.5 < s.valid_ph[1]


def test_shift_rules(t21: ChemistrySystem, llepe: EquilibriumData) -> None:
    cal = calibrate(llepe, t21).to_system("X")
    _, offsets, mean_shifts = extend_by_shift(cal, t21, ("Tb", "Ho"), rule=ShiftRule.MEAN)
    mean = sum(offsets.values()) / len(offsets)
    assert all(sh.offset == pytest.approx(mean) for sh in mean_shifts)
    _, _, interp = extend_by_shift(cal, t21, ("Tb", "Ho", "Lu"))
    tb, ho, lu = interp
    # Tb lies between Sm and Dy in T21's extraction order, Ho between Dy and Y, Lu beyond Y
    t = (t21.elements["Tb"].log10_k - t21.elements["Sm"].log10_k) / (
        t21.elements["Dy"].log10_k - t21.elements["Sm"].log10_k
    )
    assert tb.offset == pytest.approx((1 - t) * offsets["Sm"] + t * offsets["Dy"])
    assert set(ho.weights) == {"Dy", "Y"}
    assert dict(lu.weights) == {"Y": 1.0}
