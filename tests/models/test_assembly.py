"""The compiled assembly of the stage balances (models/_assembly.py) against the NumPy assembly.

Two implementations of the same equations: the residual and the sparse Jacobian must agree to
rounding on every example plant and on a flowsheet with an acidity-adjusted link between
circuits, at a start-up state and at a perturbed one, steady and over an implicit-Euler step.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from models.flowsheet import build_flowsheet
from models.residual import Residual
from models.spec import load_spec, parse_spec
from models.steady import startup_state

PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"
SPECS = Path(__file__).resolve().parents[1] / "specs"
CASES = [
    PLANTS / "tb_dy.toml",
    PLANTS / "hree_refinery.toml",
    PLANTS / "sulfate_leach.toml",
    SPECS / "adjusted_pair.toml",
]


@pytest.mark.parametrize("spec", CASES, ids=lambda p: p.stem)
@pytest.mark.parametrize("dt_h", [np.inf, 2.5])
def test_compiled_assembly_equals_numpy(spec: Path, dt_h: float) -> None:
    fs = build_flowsheet(load_spec(spec))
    p = fs.parameter_vector()
    reference = Residual(fs, compiled=False)
    compiled = Residual(fs)
    assert compiled.compiled
    assert not reference.compiled
    fv = reference.flows(p)
    rng = np.random.default_rng(7)
    start = startup_state(fs, p, reference)
    for z in (start, start + 0.3 * rng.standard_normal(start.size)):
        previous = None
        if np.isfinite(dt_h):
            previous = reference.holdups(reference.local(z - 0.1, p, jacobian=False), fv)
        kw = {"fv": fv, "dt_h": dt_h, "previous": previous}
        r_ref, j_ref = reference.evaluate(z, p, **kw)
        compiled.evaluate(z, p, **kw)  # the first evaluation builds the pattern (NumPy)
        r_fast, j_fast = compiled.evaluate(z, p, **kw)
        r_only, none = compiled.evaluate(z, p, jacobian=False, **kw)
        assert j_ref is not None
        assert j_fast is not None
        assert none is None
        assert np.all(np.isfinite(r_ref))
        np.testing.assert_allclose(r_fast, r_ref, rtol=0.0, atol=1e-13 * max(1.0, np.max(np.abs(r_ref))))
        np.testing.assert_array_equal(r_only, r_fast)
        np.testing.assert_array_equal(j_fast.indices, j_ref.indices)
        np.testing.assert_array_equal(j_fast.indptr, j_ref.indptr)
        scale = np.max(np.abs(j_ref.data))
        np.testing.assert_allclose(j_fast.data, j_ref.data, rtol=0.0, atol=1e-13 * scale)


def test_murphree_circuits_keep_the_numpy_assembly() -> None:
    data = tomllib.loads((PLANTS / "tb_dy.toml").read_text())
    data["circuits"][0]["stage_efficiency"] = 0.9
    assert not Residual(build_flowsheet(parse_spec(data))).compiled
