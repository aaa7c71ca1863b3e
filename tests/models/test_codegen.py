"""Stage functions compiled to C (models/_codegen.py): the same numbers as CasADi's virtual
machine, a disk cache that is reused, and the virtual machine when no compiler can be used."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import casadi as ca
import numpy as np

from models import _codegen
from models.flowsheet import build_flowsheet
from models.spec import load_spec
from models.stage import StageModel

PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"


def _stage_function(name: str) -> ca.Function:
    """tb_dy's stage function with Jacobians, under a name of the test's own."""
    lay = build_flowsheet(load_spec(PLANTS / "tb_dy.toml")).circuits[0]
    fn = StageModel(lay).values_and_jacobians
    args = fn.sx_in()
    return ca.Function(name, args, [ca.densify(e) for e in fn(*args)])


def _inputs(fn: ca.Function, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    nz = fn.size1_in(0)
    return [rng.uniform(-8.0, 0.0, nz), np.array([1.0]), np.array([298.15]), rng.normal(0.0, 0.1, fn.size1_in(3))]


def test_compiled_stage_function_gives_the_virtual_machines_numbers(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SXTWIN_CODEGEN_DIR", str(tmp_path))
    fn = _stage_function("stage_test_same")
    fast = _codegen.compiled(fn)
    assert fast is not fn
    assert fast.is_a("External")
    assert len(list(tmp_path.glob("stage_test_same_*.so"))) == 1
    for seed in range(3):
        args = _inputs(fn, seed)
        for a, b in zip(fn(*args), fast(*args), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_cache_is_reused_without_compiling(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SXTWIN_CODEGEN_DIR", str(tmp_path))
    fn = _stage_function("stage_test_cache")
    _codegen.compiled(fn)

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again although the library is in the cache")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    again = _codegen.compiled(fn)
    assert again.is_a("External")


def test_without_a_compiler_the_virtual_machine_serves(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("SXTWIN_CODEGEN_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    fn = _stage_function("stage_test_nocc")
    with caplog.at_level(logging.WARNING, logger="models._codegen"):
        assert _codegen.compiled(fn) is fn
    assert "virtual machine" in caplog.text
    assert not list(tmp_path.glob("*.so"))


def test_code_generation_can_be_switched_off(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SXTWIN_CODEGEN_DIR", str(tmp_path))
    monkeypatch.setenv("SXTWIN_CODEGEN", "0")
    fn = _stage_function("stage_test_off")
    assert _codegen.compiled(fn) is fn
    assert not list(tmp_path.glob("*.so"))
