r"""Batch (single-contact) equilibrium data for calibration: parsing, validation and the
equilibrium state of every measured point.

The input format is the LLEPE compilation ``PC88A_HCL_NdPrCeLaDySmY.csv`` (Argonne, source key
``LLEPE``; shipped as ``models/data/llepe_pc88a_hcl.csv``). One row is one contact of an HCl feed
with PC88A (P507) in an aliphatic diluent; the columns are

==================  =================================================================
column              meaning
==================  =================================================================
``label``           the study the row comes from (``Li (1987)``, ...)
``Feed H+[M]``      initial (feed) acidity h0, mol/L
``Feed H+[M].1``    LLEPE's slot for the equilibrium acidity; in this file it repeats
                    ``Feed H+[M]`` (identical in 197 rows, rounded to 0.01 M in 18 Lee
                    (2005) rows), so it is not a measurement and is not used
``PC88A[M]``        extractant, formal monomer mol/L (up to 3.0 M, i.e. near neat
                    PC88A at 0.95 kg/L / 306.4 g/mol = 3.1 M; a dimer reading would
                    exceed neat extractant)
``PC88A[M].1``      LLEPE's slot for the equilibrium extractant; a copy, not used
``Feed X[M]``       feed concentration of element X, mol/L (0 when X is absent)
``Xaq X``           equilibrium aqueous concentration of X, mol/L
``D X``             distribution ratio of X (0 = below detection)
==================  =================================================================

(column meaning per LLEPE's ``llepe/llepe.py`` class docstring: ``h_i, h_eq, z_i, z_eq,
{ES}_aq_i, {ES}_aq_eq, {ES}_d_eq``). In every row of the shipped file
:math:`D = (x^0 - x)/x` to 0.1 %, i.e. the compilation assumes the phase ratio O/A = 1, and so
do we.

Equilibrium state of a contact (O/A = 1, cation exchange
:math:`\mathrm{RE^{3+} + 3(HA)_2 = RE(A\cdot HA)_3 + 3H^+}`, charges :math:`z_i`):

.. math::

    y_i = D_i x_i, \qquad h = h^0 + \sum_i z_i y_i, \qquad
    f = C_\mathrm{HA}/2 - \sum_i z_i y_i

(organic concentration, free acidity, free dimer). The model's :math:`\log_{10} D` is evaluated
at this *measured* state, so calibration does not depend on a batch solve.

Points that cannot enter a fit on :math:`\log_{10} D` are excluded and counted
(:class:`Exclusion`): D = 0 (below detection). The optional reliability screen
(:func:`screen_points`) drops points whose extracted fraction :math:`E = D/(1 + D)` lies outside
a band, because D then rests on a concentration difference smaller than typical ICP error.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from models.chemistry import Medium
from models.elements import ALL_ELEMENTS, element
from models.errors import DataFileError, UnknownElementError, bad_value

__all__ = [
    "LLEPE_FILE",
    "EquilibriumData",
    "EquilibriumPoint",
    "Exclusion",
    "load_llepe_data",
    "parse_llepe_csv",
    "screen_points",
]

LLEPE_FILE = "llepe_pc88a_hcl.csv"
"""The shipped copy of the LLEPE compilation, in ``models/data``."""

_LABEL = "label"
_FEED_H = "Feed H+[M]"
_EXTRACTANT = "PC88A[M]"
_IGNORED = ("Feed H+[M].1", "PC88A[M].1")
_ELEMENT_COLUMN = re.compile(
    r"^(?:Feed (?P<feed>[A-Za-z]+)\[M\]|Xaq (?P<xaq>[A-Za-z]+)|D (?P<d>[A-Za-z]+))$"
)
_CONSISTENCY_REL_TOL = 0.02


@dataclass(frozen=True)
class EquilibriumPoint:
    """One measured distribution ratio with the equilibrium state it was measured at.

    Attributes
    ----------
    source
        The study (the row's ``label``).
    element
        Element symbol.
    row
        Line number in the file (the header is line 1).
    distribution
        Measured D (organic over aqueous molarity), > 0.
    aqueous_mol_per_l
        Equilibrium aqueous concentration of every element in the contact, mol/L.
    acidity_mol_per_l
        Equilibrium free H+, mol/L (:math:`h^0 + \\sum z_i y_i`).
    free_dimer_mol_per_l
        Equilibrium free extractant dimer, mol/L (:math:`C/2 - \\sum z_i y_i`).
    extractant_mol_per_l
        Total extractant, formal monomer mol/L.
    feed_acidity_mol_per_l
        Initial acidity h0, mol/L.
    """

    source: str
    element: str
    row: int
    distribution: float
    aqueous_mol_per_l: Mapping[str, float]
    acidity_mol_per_l: float
    free_dimer_mol_per_l: float
    extractant_mol_per_l: float
    feed_acidity_mol_per_l: float

    @property
    def log10_d(self) -> float:
        """Measured log10 D."""
        return math.log10(self.distribution)

    @property
    def extracted_fraction(self) -> float:
        """E = D/(1 + D), the fraction extracted at O/A = 1."""
        return self.distribution / (1.0 + self.distribution)

    @property
    def ph(self) -> float:
        """Equilibrium pH on the concentration scale."""
        return -math.log10(self.acidity_mol_per_l)


@dataclass(frozen=True)
class Exclusion:
    """Points left out of a fit, by reason.

    Attributes
    ----------
    reason
        Why (one sentence).
    count
        How many points.
    by_element
        How many of them per element.
    """

    reason: str
    count: int
    by_element: Mapping[str, int]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"reason": self.reason, "count": self.count, "by_element": dict(self.by_element)}


@dataclass(frozen=True)
class EquilibriumData:
    """A validated set of batch equilibrium points.

    Attributes
    ----------
    name
        Where the data came from (file name).
    source_key
        Key in ``models/data/sources.toml`` for the compilation (``LLEPE``).
    medium
        Aqueous medium of every contact.
    o_to_a
        Phase ratio assumed for every contact.
    points
        Usable points (D > 0), in file order.
    excluded
        Points left out while reading, by reason.
    n_rows
        Data rows in the file.
    """

    name: str
    source_key: str
    medium: Medium
    o_to_a: float
    points: tuple[EquilibriumPoint, ...]
    excluded: tuple[Exclusion, ...]
    n_rows: int

    @property
    def elements(self) -> tuple[str, ...]:
        """Elements with at least one point, in the order of ``ALL_ELEMENTS`` (Y after Lu)."""
        present = {p.element for p in self.points}
        return tuple(s for s in ALL_ELEMENTS if s in present)

    @property
    def sources(self) -> tuple[str, ...]:
        """Studies with at least one point, sorted."""
        return tuple(sorted({p.source for p in self.points}))

    def sources_of(self, symbol: str) -> tuple[str, ...]:
        """Studies that measured ``symbol``, sorted."""
        return tuple(sorted({p.source for p in self.points if p.element == symbol}))


def _count_by_element(points: Sequence[EquilibriumPoint]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in points:
        out[p.element] = out.get(p.element, 0) + 1
    return out


def _number(raw: str | None, *, where: str, column: str) -> float:
    text = (raw or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise DataFileError(
            f"{where}, column {column!r}: {text!r} is not a number", field=column
        ) from None
    if not math.isfinite(value):
        raise DataFileError(
            f"{where}, column {column!r}: {text!r} is not a finite number", field=column
        )
    if value < 0.0:
        raise DataFileError(
            f"{where}, column {column!r}: {value!r} is negative; concentrations and D must be >= 0",
            field=column,
        )
    return value


def _element_columns(header: Sequence[str], where: str) -> tuple[str, ...]:
    """Validate the header; return the element symbols in column order."""
    seen = set()
    for required in (_LABEL, _FEED_H, _EXTRACTANT):
        if required not in header:
            raise DataFileError(
                f"{where}: missing column {required!r}; the header must hold {_LABEL!r}, "
                f"{_FEED_H!r}, {_EXTRACTANT!r} and for each element X 'Feed X[M]', 'Xaq X', 'D X'",
                field=required,
            )
    groups: dict[str, set[str]] = {}
    for col in header:
        if col in seen:
            raise DataFileError(f"{where}: column {col!r} appears twice", field=col)
        seen.add(col)
        if col in (_LABEL, _FEED_H, _EXTRACTANT, *_IGNORED):
            continue
        m = _ELEMENT_COLUMN.match(col)
        if m is None:
            raise DataFileError(
                f"{where}: unknown column {col!r}; allowed: {_LABEL!r}, {_FEED_H!r}, "
                f"{_EXTRACTANT!r}, {', '.join(repr(c) for c in _IGNORED)} and per element X "
                "'Feed X[M]', 'Xaq X', 'D X'",
                field=col,
            )
        kind = next(k for k, v in m.groupdict().items() if v is not None)
        symbol = m.group(kind)
        try:
            element(symbol, field=f"column {col!r}")
        except UnknownElementError as exc:
            raise UnknownElementError(f"{where}: {exc.message}", field=col) from None
        groups.setdefault(symbol, set()).add(kind)
    symbols = []
    for symbol, kinds in groups.items():
        missing = {"feed": f"Feed {symbol}[M]", "xaq": f"Xaq {symbol}", "d": f"D {symbol}"}
        lacking = [name for kind, name in missing.items() if kind not in kinds]
        if lacking:
            raise DataFileError(
                f"{where}: element {symbol} lacks column(s) {', '.join(repr(c) for c in lacking)}",
                field=lacking[0],
            )
        symbols.append(symbol)
    if not symbols:
        raise DataFileError(
            f"{where}: no element columns ('Feed X[M]', 'Xaq X', 'D X')", field="header"
        )
    return tuple(symbols)


def parse_llepe_csv(
    text: str,
    *,
    where: str,
    source_key: str = "LLEPE",
    medium: Medium = Medium.CHLORIDE,
) -> EquilibriumData:
    """Parse and validate batch equilibrium data in the LLEPE column layout (see module doc).

    Parameters
    ----------
    text
        The CSV text.
    where
        Name used in error messages and as :attr:`EquilibriumData.name` (e.g. the file name).
    source_key
        Key of the compilation in ``sources.toml`` (checked by the caller that saves provenance).
    medium
        Aqueous medium of the contacts (HCl data: chloride).

    Raises
    ------
    DataFileError
        Malformed CSV, a missing or unknown column, a value that is not a finite number >= 0,
        an element with D > 0 but no feed, a row whose D disagrees with its feed and raffinate
        concentrations at O/A = 1 by more than 2 %, or a contact that would load more than the
        extractant holds. Messages name the line and the column.
    UnknownElementError
        A column for an element symbol sxtwin does not know.
    """
    reader = csv.reader(io.StringIO(text))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise DataFileError(f"{where}: malformed CSV: {exc}", field="csv") from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataFileError(f"{where}: empty file; expected a header line", field="header")
    header = [c.strip() for c in rows[0]]
    symbols = _element_columns(header, where)
    index = {c: i for i, c in enumerate(header)}
    points: list[EquilibriumPoint] = []
    below_detection: dict[str, int] = {}
    n_rows = 0
    for lineno, raw_row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in raw_row):
            continue
        n_rows += 1
        loc = f"{where}: line {lineno}"
        if len(raw_row) != len(header):
            raise DataFileError(
                f"{loc}: {len(raw_row)} fields, but the header has {len(header)}", field="csv"
            )
        label = raw_row[index[_LABEL]].strip()
        if not label:
            raise DataFileError(f"{loc}, column {_LABEL!r}: empty study label", field=_LABEL)
        h0 = _number(raw_row[index[_FEED_H]], where=loc, column=_FEED_H)
        c_ha = _number(raw_row[index[_EXTRACTANT]], where=loc, column=_EXTRACTANT)
        if c_ha <= 0.0:
            raise DataFileError(
                f"{loc}, column {_EXTRACTANT!r}: {c_ha!r} must be > 0 (formal monomer mol/L)",
                field=_EXTRACTANT,
            )
        feed: dict[str, float] = {}
        aq: dict[str, float] = {}
        dist: dict[str, float] = {}
        for s in symbols:
            feed[s] = _number(raw_row[index[f"Feed {s}[M]"]], where=loc, column=f"Feed {s}[M]")
            aq[s] = _number(raw_row[index[f"Xaq {s}"]], where=loc, column=f"Xaq {s}")
            dist[s] = _number(raw_row[index[f"D {s}"]], where=loc, column=f"D {s}")
            if feed[s] == 0.0 and (aq[s] > 0.0 or dist[s] > 0.0):
                raise DataFileError(
                    f"{loc}, column 'Feed {s}[M]': 0 but 'Xaq {s}' or 'D {s}' is > 0",
                    field=f"Feed {s}[M]",
                )
            if feed[s] > 0.0 and dist[s] > 0.0:
                if aq[s] <= 0.0:
                    raise DataFileError(
                        f"{loc}, column 'Xaq {s}': must be > 0 when 'D {s}' > 0", field=f"Xaq {s}"
                    )
                implied = (feed[s] - aq[s]) / aq[s]
                if abs(implied - dist[s]) > _CONSISTENCY_REL_TOL * dist[s]:
                    raise DataFileError(
                        f"{loc}, column 'D {s}': {dist[s]!r} disagrees with (feed - Xaq)/Xaq = "
                        f"{implied:.4g} at O/A = 1 (tolerance 2 %)",
                        field=f"D {s}",
                    )
        present = [s for s in symbols if feed[s] > 0.0]
        if not present:
            raise DataFileError(f"{loc}: no element has a feed concentration > 0", field="Feed")
        organic = {s: dist[s] * aq[s] for s in present}
        released = sum(float(element(s).charge) * organic[s] for s in present)
        h_eq = h0 + released
        f_free = 0.5 * c_ha - released
        if f_free <= 0.0:
            raise DataFileError(
                f"{loc}: the measured loading ties up {released:.4g} mol/L dimer, more than the "
                f"{0.5 * c_ha:.4g} mol/L in column {_EXTRACTANT!r}",
                field=_EXTRACTANT,
            )
        if h_eq <= 0.0:
            raise DataFileError(
                f"{loc}, column {_FEED_H!r}: equilibrium acidity is 0", field=_FEED_H
            )
        state = {s: aq[s] for s in present}
        for s in present:
            if dist[s] == 0.0:
                below_detection[s] = below_detection.get(s, 0) + 1
                continue
            points.append(
                EquilibriumPoint(
                    source=label,
                    element=s,
                    row=lineno,
                    distribution=dist[s],
                    aqueous_mol_per_l=state,
                    acidity_mol_per_l=h_eq,
                    free_dimer_mol_per_l=f_free,
                    extractant_mol_per_l=c_ha,
                    feed_acidity_mol_per_l=h0,
                )
            )
    if n_rows == 0:
        raise DataFileError(f"{where}: no data rows", field="csv")
    excluded = []
    if below_detection:
        excluded.append(
            Exclusion(
                "D = 0 (below detection): log10 D undefined",
                sum(below_detection.values()),
                below_detection,
            )
        )
    return EquilibriumData(
        name=where,
        source_key=source_key,
        medium=medium,
        o_to_a=1.0,
        points=tuple(points),
        excluded=tuple(excluded),
        n_rows=n_rows,
    )


def load_llepe_data() -> EquilibriumData:
    """The shipped LLEPE PC88A-HCl compilation (``models/data/llepe_pc88a_hcl.csv``)."""
    text = resources.files("models").joinpath(f"data/{LLEPE_FILE}").read_text(encoding="utf-8")
    return parse_llepe_csv(text, where=LLEPE_FILE)


def screen_points(
    points: Sequence[EquilibriumPoint], min_extracted_fraction: float, max_extracted_fraction: float
) -> tuple[tuple[EquilibriumPoint, ...], Exclusion | None]:
    """Keep points with ``min <= D/(1+D) <= max``; return them and what was dropped.

    With O/A = 1, D = (x0 - x)/x: at E < 2 % the difference x0 - x is smaller than a typical
    2-5 % ICP error on x0 and x; at E > 98 % x itself is near the detection limit.
    """
    lo, hi = float(min_extracted_fraction), float(max_extracted_fraction)
    if not (math.isfinite(lo) and 0.0 <= lo < 0.5):
        raise bad_value("min_extracted_fraction", min_extracted_fraction, "a fraction in [0, 0.5)")
    if not (math.isfinite(hi) and 0.5 < hi <= 1.0):
        raise bad_value("max_extracted_fraction", max_extracted_fraction, "a fraction in (0.5, 1]")
    kept = tuple(p for p in points if lo <= p.extracted_fraction <= hi)
    dropped = [p for p in points if not lo <= p.extracted_fraction <= hi]
    if not dropped:
        return kept, None
    reason = (
        f"reliability screen: extracted fraction D/(1+D) outside [{lo:g}, {hi:g}] "
        "(D rests on a concentration difference below typical ICP error)"
    )
    return kept, Exclusion(reason, len(dropped), _count_by_element(dropped))
