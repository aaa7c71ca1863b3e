r"""The steady residual in a form whose second derivatives stay finite at trace concentrations.

:func:`models.residual.symbolic_residual` writes the element balance of stage *j* as
:math:`\ln \mathit{In}_{ij} - \ln(L_j X_{ij} + G_j Y_{ij})`. Its value and first derivatives are
fine everywhere, but the exact Hessian that IPOPT needs is not: a trace held at the
``FLOOR_MOL_PER_H`` regularisation (1e-200 mol/h, a 1e-203 mol/L Gd in a Dy scrub) makes
automatic differentiation form :math:`1/\mathit{In}^2 \approx 10^{400}` times
:math:`(\partial \mathit{In})^2 \approx 10^{-400}`, i.e. ``inf * 0 = NaN``.

The same equations are written here as

.. math::

    R^\mathrm{el}_{ij} = \big[\ln(K\,\mathit{In}_{ij}) - \ln K\big]
        - \big[\ln X_{ij} + \ln(L_j + G_j D_{ij})\big], \qquad K = 10^{100},

(:math:`Y = D X` with :math:`\ln D` from the stage function): the outflow term is exact in the
logarithms and the inflow is lifted by :math:`K` so that every square formed by differentiation
lies between 1e-200 and 1e+210. Acid and extractant rows are copied unchanged. The function has
the signature and output order of :func:`~models.residual.symbolic_residual`; a test checks that
the two agree to rounding at a solved state.
"""

from __future__ import annotations

import math

import casadi as ca
import numpy as np
import scipy.sparse as sp

from models.flowsheet import Flowsheet
from models.residual import (
    ACID_SCALE_REF_MOL_PER_L,
    FLOOR_MOL_PER_H,
    Residual,
    symbolic_murphree_rows,
    symbolic_stage_values,
)

__all__ = ["stable_residual"]

_LIFT = 1e100
_LN_LIFT = math.log(_LIFT)


def stable_residual(flowsheet: Flowsheet, floor_mol_per_h: float = FLOOR_MOL_PER_H) -> ca.Function:
    """``R(z, p)`` as a CasADi MX function with finite exact Hessians (see module docstring)."""
    fs = flowsheet
    z = ca.MX.sym("z", fs.n_unknowns)
    p = ca.MX.sym("p", fs.parameters.values.shape[0])
    flows = fs.flows_function(p)
    w = flows[0]
    per = [flows[1 + 7 * c : 1 + 7 * (c + 1)] for c in range(len(fs.circuits))]
    xs, ys, acids, exts, ln_xs, ln_ds = [], [], [], [], [], []
    stages = symbolic_stage_values(fs, z, p)
    for ln_x, ln_d, acid, ext, ln_y in stages:
        ln_xs.append(ln_x)
        ln_ds.append(ln_d)
        xs.append(ca.exp(ln_x))
        ys.append(ca.exp(ln_y))
        acids.append(acid)
        exts.append(ext)
    flux_in = [per[c][2] + per[c][4] + floor_mol_per_h for c in range(len(fs.circuits))]
    org_in = [per[c][4] for c in range(len(fs.circuits))]
    acid_in = [per[c][3] for c in range(len(fs.circuits))]
    res = Residual(fs)
    for g in res.groups:
        tl, sl = fs.circuits[g.target], fs.circuits[g.source]
        sel = ca.DM(sp.csr_matrix((np.ones(len(g.tgt_el)), (g.tgt_el, g.src_el)), shape=(tl.n_el, sl.n_el)).toarray())
        spar = ca.Sparsity.triplet(
            sl.n_stages, tl.n_stages, [int(v) for v in g.src_stage], [int(v) for v in g.tgt_stage]
        )
        order = np.lexsort((g.src_stage, g.tgt_stage))  # CasADi stores nonzeros column-major
        wm = ca.MX(spar, w[[int(v) for v in g.weight[order]]])
        conc = xs[g.source] if g.phase == "aq" else ys[g.source]
        contrib = ca.mtimes(ca.mtimes(sel, conc), wm)
        flux_in[g.target] = flux_in[g.target] + contrib
        if g.phase == "org":
            org_in[g.target] = org_in[g.target] + contrib
        elif g.carries_acid:
            acid_in[g.target] = acid_in[g.target] + ca.mtimes(acids[g.source], wm)
    out = []
    for c, lay in enumerate(fs.circuits):
        n = lay.n_el
        lo, go = per[c][0], per[c][1]
        fresh_acid = per[c][3]
        r = ca.DM(res.release[c]).T
        # ln(L x + G y) = ln x + ln(L + G y/x); y/x = D at equilibrium
        ratio = ca.exp(stages[c][4] - ln_xs[c]) if lay.murphree else ca.exp(ln_ds[c])
        ln_out = ln_xs[c] + ca.log(ca.repmat(lo, n, 1) + ca.repmat(go, n, 1) * ratio)
        r_el = (ca.log(flux_in[c] * _LIFT) - _LN_LIFT) - ln_out
        released = ca.mtimes(r, ca.repmat(go, n, 1) * ys[c] - org_in[c])
        scale = ca.sum2(fresh_acid) + ACID_SCALE_REF_MOL_PER_L * ca.sum2(lo)
        r_h = (acid_in[c] - lo * acids[c] + released) / scale
        rows = [r_el, r_h] + ([exts[c]] if lay.has_f else [])
        if lay.murphree:
            rows.append(symbolic_murphree_rows(fs, lay, p, ln_xs[c], ln_ds[c], stages[c][4], org_in[c], go))
        out.append(ca.vec(ca.vertcat(*rows)))
    return ca.Function("residual_stable", [z, p], [ca.vertcat(*out)], ["z", "p"], ["r"])
