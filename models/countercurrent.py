r"""Countercurrent extraction theory (Xu Guangxian): product split, mixed extraction ratios, stage
numbers and minimum reflux of a two-component fractional extraction with constant separation factor.

Notation (chemistry_notes.md section 2, source key ``XU_THEORY``): A is the more extractable
component (leaves in the organic), B the less extractable (raffinate); feed normalised to 1 mol RE
per unit time with fractions :math:`f_A, f_B`; purities :math:`P_A, P_B`; :math:`S` the RE flux in
the organic of the extraction section, :math:`W` the RE flux in the scrub aqueous (both per mol
fed); :math:`n` extraction and :math:`m` scrub stages.

.. math::

    f'_A = \frac{P_B - f_B}{P_A + P_B - 1}, \qquad
    a = \frac{P_A/(1-P_A)}{f_A/f_B}, \qquad b = \frac{P_B/(1-P_B)}{f_B/f_A}

aqueous feed: :math:`S = W + f'_A,\ E_M = S/(1+W),\ E'_M = S/W`; organic feed:
:math:`S = W - f'_B,\ E_M = S/W,\ E'_M = (S+1)/W`;

.. math::

    n = \frac{\lg b}{\lg(\beta_E E_M)}, \qquad m + 1 = \frac{\lg a}{\lg(\beta_S / E'_M)}

with :math:`\beta_E, \beta_S` the separation factors that govern the extraction and scrub
sections (the same for a binary; "effective" ones for a multicomponent cut).

Minimum reflux, with Xu's hypothesis that the feed-stage aqueous has the feed composition (aqueous
feed): with :math:`y_F = \beta f_A/(\beta f_A + f_B)` the organic in equilibrium with the feed,

.. math::

    W_\mathrm{min,scrub} = f'_A\,\frac{P_A - y_F}{y_F - f_A}, \qquad
    W_\mathrm{min,extraction} = \frac{f'_B P_B - f_B + f'_A (1 - y_F)}{y_F - f_A}

(balances of A over the scrub and of B over the extraction section with a pinch at the feed stage).
Both equal :math:`1/(\beta-1)` for ideal purities; the notes' forms
:math:`f'_A/((\beta-1) f_A)` and :math:`\beta f'_B/((\beta-1) f_B) - 1` are these at
:math:`P_A = 1` and :math:`P_B = 1` respectively (an upper estimate for finite purities).

Validation (chemistry_notes.md, CIESC20 Table 3): CePr/Nd, organic feed, :math:`P_A = P_B = 0.9995`,
:math:`S = 0.99`, :math:`\beta_S = 1.55` gives :math:`m = 34.06` (the plant has 34).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from models.errors import InputError

__all__ = ["XuDesign", "minimum_reflux", "xu_design"]


@dataclass(frozen=True)
class XuDesign:
    """A countercurrent-theory design (all fluxes per mol RE fed).

    Attributes
    ----------
    f_a_product, f_b_product
        Product split :math:`f'_A, f'_B`.
    a, b
        Purification factors of the scrub (A product) and extraction (B product) sections.
    s, w
        Organic RE flux in extraction, RE flux in the scrub aqueous.
    e_m, e_m_scrub
        Mixed extraction ratios of the extraction and scrub sections.
    n, m
        Stage numbers (real; ``inf`` when the section cannot reach its purity).
    """

    f_a_product: float
    f_b_product: float
    a: float
    b: float
    s: float
    w: float
    e_m: float
    e_m_scrub: float
    n: float
    m: float

    @property
    def n_stages(self) -> int:
        """Extraction stages, rounded up."""
        return math.ceil(self.n - 1e-9) if math.isfinite(self.n) else 0

    @property
    def m_stages(self) -> int:
        """Scrub stages, rounded up."""
        return math.ceil(self.m - 1e-9) if math.isfinite(self.m) else 0


def _check(f_a: float, p_a: float, p_b: float) -> None:
    if not 0.0 < f_a < 1.0:
        raise InputError(f"f_a: {f_a!r} is not allowed; expected 0 < f_a < 1", field="f_a")
    for name, v in (("p_a", p_a), ("p_b", p_b)):
        if not 0.5 < v < 1.0:
            raise InputError(f"{name}: {v!r} is not allowed; expected 0.5 < purity < 1", field=name)


def xu_design(
    f_a: float,
    p_a: float,
    p_b: float,
    *,
    beta_extraction: float,
    beta_scrub: float,
    s: float | None = None,
    w: float | None = None,
    feed: Literal["aqueous", "organic"] = "aqueous",
) -> XuDesign:
    """Stage numbers for purities ``p_a``, ``p_b`` with extraction amount ``s`` or scrub amount ``w``."""
    _check(f_a, p_a, p_b)
    if (s is None) == (w is None):
        raise InputError("give exactly one of s (extraction amount) or w (scrub amount)", field="s")
    f_b = 1.0 - f_a
    fa_ = (p_b - f_b) / (p_a + p_b - 1.0)
    fb_ = 1.0 - fa_
    if not 0.0 < fa_ < 1.0:
        raise InputError(f"purities {p_a}, {p_b} give an impossible split f'_A = {fa_:.4g}", field="p_a")
    a = (p_a / (1.0 - p_a)) / (f_a / f_b)
    b = (p_b / (1.0 - p_b)) / (f_b / f_a)
    s_: float
    w_: float
    if feed == "aqueous":
        if w is not None:
            s_, w_ = w + fa_, w
        else:
            assert s is not None  # exactly one is given, checked above
            s_, w_ = s, s - fa_
    elif w is not None:
        s_, w_ = w - fb_, w
    else:
        assert s is not None
        s_, w_ = s, s + fb_
    if s_ <= 0 or w_ <= 0:
        raise InputError(f"the fluxes S = {s_:.4g}, W = {w_:.4g} must be positive", field="s")
    if feed == "aqueous":
        e_m, e_ms = s_ / (1.0 + w_), s_ / w_
    else:
        e_m, e_ms = s_ / w_, (s_ + 1.0) / w_
    n = math.log10(b) / math.log10(beta_extraction * e_m) if beta_extraction * e_m > 1.0 else math.inf
    m1 = math.log10(a) / math.log10(beta_scrub / e_ms) if beta_scrub / e_ms > 1.0 else math.inf
    return XuDesign(fa_, fb_, a, b, s_, w_, e_m, e_ms, n, m1 - 1.0)


def minimum_reflux(f_a: float, p_a: float, p_b: float, beta: float) -> tuple[float, float]:
    """``(W_min_scrub, W_min_extraction)`` per mol fed, aqueous feed (module docstring)."""
    _check(f_a, p_a, p_b)
    if beta <= 1.0:
        raise InputError(f"beta: {beta!r} is not allowed; expected > 1", field="beta")
    f_b = 1.0 - f_a
    fa_ = (p_b - f_b) / (p_a + p_b - 1.0)
    fb_ = 1.0 - fa_
    y_f = beta * f_a / (beta * f_a + f_b)
    w_s = fa_ * (p_a - y_f) / (y_f - f_a)
    w_e = (fb_ * p_b - f_b + fa_ * (1.0 - y_f)) / (y_f - f_a)
    return w_s, w_e
