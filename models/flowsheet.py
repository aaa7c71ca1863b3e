r"""The structure of a flowsheet: circuits, stages, unknowns, parameters and stream links.

A :class:`Flowsheet` is built once from a validated :class:`~models.spec.PlantSpec`. It fixes

- the **unknowns**: per stage of circuit *c*, :math:`\ln x_i` for every element the circuit
  sees (aqueous, mol/L), :math:`\ln h` (free H+, mol/L) and, for mass action,
  :math:`\ln f` (free extractant dimer, mol/L); stage-major inside each circuit block;
- the **parameters** :math:`p`: a labelled vector of every manipulated variable, feed flow,
  acidity and concentration, extractant concentration, temperature and per-element
  :math:`\ln D` offsets (plant-model mismatch, drifting parameters);
- the **links**: every stream entering a stage as a weighted copy of another stage's outlet
  (aqueous or organic), with weights (flows, L/h) that are CasADi expressions of :math:`p`;
- the **fresh inflows**: metal and acid fluxes (mol/h) from feeds, acids and saponification
  (and the acid of an acidity-adjusted feed, whose link then carries metals only);
- the **outlets**: streams leaving each circuit (raffinate, strip liquor, loaded or barren
  organic, organic bleed), for products and mass balances.

Stages are numbered along the organic path: extraction :math:`0..n-1`, scrub
:math:`n..n+m-1`, strip :math:`n+m..N-1`. Aqueous flows from high to low index except across
the scrub/strip boundary: the strip section's aqueous leaves at stage :math:`n+m` as strip
liquor (a fraction :math:`\rho` refluxed to the top scrub stage); scrub acid enters the top
scrub stage, strip acid the top strip stage, the aqueous feed the feed stage. The organic leaving
the last stage is recycled to stage 0 (less the bleed, plus barren make-up); with no strip
section the organic is once-through and leaves loaded. Saponification adds
:math:`s\,C_\mathrm{HA}` mol/L of Na to the organic entering stage 0. Assumptions: phase volumes
do not change with loading; no entrainment; equilibrium stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import casadi as ca
import numpy as np

from models.chemistry import ChemistrySystem, Family
from models.elements import element
from models.errors import SpecError
from models.labelled import LabelledVector
from models.provenance import ProvenanceClass, RestsOn
from models.spec import CIRCUIT_VARIABLES, CircuitSpec, PlantSpec

__all__ = ["CircuitLayout", "Flowsheet", "Link", "Outlet", "build_flowsheet"]


@dataclass(frozen=True)
class CircuitLayout:
    """Where one circuit's unknowns live and what they mean.

    Attributes
    ----------
    name, index
        Circuit name and position in the spec.
    system
        Its chemistry.
    elements
        Elements tracked in this circuit (all that can reach it), ordered by atomic number.
    n_extraction, n_scrub, n_strip
        Stage counts per section.
    feed_stage
        0-based index of the aqueous feed stage.
    offset
        Index of the circuit's first unknown in the global vector.
    """

    name: str
    index: int
    system: ChemistrySystem
    elements: tuple[str, ...]
    n_extraction: int
    n_scrub: int
    n_strip: int
    feed_stage: int
    offset: int
    organic_fed: bool
    spec: CircuitSpec = field(repr=False, compare=False)

    @cached_property
    def n_stages(self) -> int:
        """Total stages."""
        return self.n_extraction + self.n_scrub + self.n_strip

    @cached_property
    def n_el(self) -> int:
        """Number of elements."""
        return len(self.elements)

    @cached_property
    def has_f(self) -> bool:
        """True when free extractant is an unknown (mass action)."""
        return self.system.family is Family.MASS_ACTION

    @cached_property
    def murphree(self) -> bool:
        """True when the stages have a Murphree efficiency: the organic concentrations are unknowns."""
        return self.spec.stage_efficiency is not None

    @cached_property
    def y_start(self) -> int:
        """Position in a stage's block of the first organic unknown (Murphree stages only):
        ``u_i = ln y_i - ln(D_i x_i)``, the organic's departure from equilibrium."""
        return self.n_el + 1 + int(self.has_f)

    @cached_property
    def nv(self) -> int:
        """Unknowns per stage: ln x (n), ln h, [ln f], [u = ln y - ln D x (n), Murphree stages]."""
        return self.y_start + (self.n_el if self.murphree else 0)

    @cached_property
    def size(self) -> int:
        """Unknowns in this circuit."""
        return self.nv * self.n_stages

    @property
    def strip_first(self) -> int:
        """Index of the first strip stage (== n_stages when there is none)."""
        return self.n_extraction + self.n_scrub

    @property
    def scrub_top(self) -> int:
        """Index of the stage where scrub liquor enters (top of scrub, or of extraction)."""
        return self.n_extraction + self.n_scrub - 1

    def section(self, stage: int) -> str:
        """Section name of a 0-based stage index."""
        if stage < self.n_extraction:
            return "extraction"
        if stage < self.strip_first:
            return "scrub"
        return "strip"

    def stage_labels(self) -> tuple[str, ...]:
        """Labels ``E1..En, S1..Sm, P1..Pk`` (extraction, scrub, strip) along the organic path."""
        return tuple(
            [f"E{i + 1}" for i in range(self.n_extraction)]
            + [f"S{i + 1}" for i in range(self.n_scrub)]
            + [f"P{i + 1}" for i in range(self.n_strip)]
        )


@dataclass(frozen=True)
class Link:
    """A stream from one stage's outlet into another stage.

    Attributes
    ----------
    target, target_stage
        Receiving circuit index and 0-based stage.
    source, source_stage
        Sending circuit index and stage.
    phase
        ``"aq"`` or ``"org"``: which outlet of the source.
    weight
        Index into the flowsheet's weight vector (flow in L/h).
    carries_acid
        False for an acidity-adjusted feed: the stream brings its metals but not its acid (the
        target circuit's fresh acid holds the adjusted acidity instead).
    """

    target: int
    target_stage: int
    source: int
    source_stage: int
    phase: str
    weight: int
    carries_acid: bool = True


@dataclass(frozen=True)
class Outlet:
    """A stream leaving a circuit: ``flow`` indexes the weight vector."""

    circuit: int
    name: str
    stage: int
    phase: str
    weight: int

    @property
    def stream(self) -> str:
        """Stream name as used in specs."""
        return self.name


@dataclass(frozen=True)
class Flowsheet:
    """Structure and symbolic flows of a plant (see module docstring).

    Attributes
    ----------
    spec
        The validated plant spec.
    circuits
        Layout per circuit.
    parameter_names, parameter_values
        Labelled parameter vector at the spec's design point.
    links, outlets
        Stream connections and circuit outlets.
    n_unknowns
        Length of the global unknown vector.
    """

    spec: PlantSpec
    circuits: tuple[CircuitLayout, ...]
    parameters: LabelledVector
    links: tuple[Link, ...]
    outlets: tuple[Outlet, ...]
    n_unknowns: int
    p_sym: ca.SX = field(repr=False)
    weights_sym: ca.SX = field(repr=False)
    l_out_sym: tuple[ca.SX, ...] = field(repr=False)
    g_out_sym: tuple[ca.SX, ...] = field(repr=False)
    fresh_aq_sym: tuple[ca.SX, ...] = field(repr=False)
    fresh_acid_sym: tuple[ca.SX, ...] = field(repr=False)
    fresh_org_sym: tuple[ca.SX, ...] = field(repr=False)
    volume_aq_sym: tuple[ca.SX, ...] = field(repr=False)
    volume_org_sym: tuple[ca.SX, ...] = field(repr=False)

    @cached_property
    def flows_function(self) -> ca.Function:
        """``p -> weights, then per circuit L_out, G_out, fresh_aq, fresh_acid, fresh_org, V_aq, V_org``."""
        outs = [self.weights_sym]
        for c in range(len(self.circuits)):
            outs += [
                self.l_out_sym[c],
                self.g_out_sym[c],
                self.fresh_aq_sym[c],
                self.fresh_acid_sym[c],
                self.fresh_org_sym[c],
                self.volume_aq_sym[c],
                self.volume_org_sym[c],
            ]
        return ca.Function("flows", [self.p_sym], outs)

    def circuit(self, name: str) -> CircuitLayout:
        """A circuit's layout by name."""
        for c in self.circuits:
            if c.name == name:
                return c
        raise SpecError(
            f"unknown circuit {name!r}; circuits: {', '.join(c.name for c in self.circuits)}", field="circuit"
        )

    def parameter_vector(self, overrides: Mapping[str, float] | None = None) -> np.ndarray:
        """Design parameter values with some replaced by name (unknown names are refused)."""
        p = np.array(self.parameters.values, dtype=float)
        for name, value in (overrides or {}).items():
            if name not in self.parameters:
                raise SpecError(f"unknown parameter {name!r}; see Flowsheet.parameters.names", field=name)
            p[self.parameters.index(name)] = float(value)
        return p

    @property
    def plant_elements(self) -> tuple[str, ...]:
        """Every element tracked anywhere, by atomic number."""
        seen: set[str] = set()
        for c in self.circuits:
            seen |= set(c.elements)
        return tuple(sorted(seen, key=lambda s: element(s).z))

    def rests_on(self) -> tuple[RestsOn, ...]:
        """Non-measured parameters the model uses (per circuit chemistry, tracked elements)."""
        out: dict[str, RestsOn] = {}
        for c in self.circuits:
            for r in c.system.rests_on(c.elements):
                out[r.parameter] = r
            if c.murphree:
                name = f"{c.name}.stage_efficiency"
                out[name] = RestsOn(
                    name, ProvenanceClass.ESTIMATED, "plant spec", "Murphree efficiency on the organic phase, fitted"
                )
        for f in self.spec.feeds:
            if f.basket is not None:
                from models.feeds import load_feed

                for r in load_feed(f.basket).rests_on():
                    out[r.parameter] = r
        return tuple(out[k] for k in sorted(out))

    def feed_inflow_mol_per_h(self, p: np.ndarray) -> dict[str, float]:
        """Metal entering the plant with external feeds, mol/h per element."""
        out: dict[str, float] = {}
        for f in self.spec.feeds:
            flow = p[self.parameters.index(f"{f.name}.flow_l_per_h")]
            for s in f.concentrations_mol_per_l():
                out[s] = out.get(s, 0.0) + flow * p[self.parameters.index(f"{f.name}.conc_mol_per_l.{s}")]
        return out


def _element_sets(spec: PlantSpec) -> dict[str, tuple[str, ...]]:
    """Elements each circuit sees: its feed's, upstream circuits', plus Na where saponified."""
    by_name = {c.name: c for c in spec.circuits}
    feeds = {f.name: f for f in spec.feeds}
    memo: dict[str, set[str]] = {}

    def of(name: str) -> set[str]:
        if name in memo:
            return memo[name]
        c = by_name[name]
        if c.feed in feeds:
            els = set(feeds[c.feed].concentrations_mol_per_l())
        else:
            els = set(of(c.feed.split(".")[0]))
        if c.saponification > 0.0:
            els.add("Na")
        memo[name] = els
        return els

    return {n: tuple(sorted(of(n), key=lambda s: element(s).z)) for n in by_name}


def build_flowsheet(spec: PlantSpec) -> Flowsheet:
    """Build the flowsheet structure and its symbolic flows from a validated spec."""
    element_sets = _element_sets(spec)
    # ---- parameters (labelled), design values from the spec
    names: list[str] = []
    values: list[float] = []

    def add(name: str, value: float) -> None:
        names.append(name)
        values.append(float(value))

    feed_conc: dict[str, dict[str, float]] = {}
    for f in spec.feeds:
        add(f"{f.name}.flow_l_per_h", f.flow_l_per_h)
        add(f"{f.name}.acidity_mol_per_l", f.acidity_mol_per_l)
        feed_conc[f.name] = f.concentrations_mol_per_l()
        for s, v in feed_conc[f.name].items():
            add(f"{f.name}.conc_mol_per_l.{s}", v)
    layouts: list[CircuitLayout] = []
    offset = 0
    for ci, c in enumerate(spec.circuits):
        system = c.chemistry.build(c.name)
        els = element_sets[c.name]
        try:
            system.check_elements(els, field=f"circuits[{ci}].chemistry")
        except Exception as exc:
            raise SpecError(f"circuits[{ci}] ({c.name}): {exc}", field=f"circuits[{ci}].chemistry") from None
        for var in CIRCUIT_VARIABLES:
            add(f"{c.name}.{var}", getattr(c, var))
        if c.feed_acidity_mol_per_l is not None:
            add(f"{c.name}.feed_acidity_mol_per_l", c.feed_acidity_mol_per_l)
        add(f"{c.name}.extractant_mol_per_l", c.chemistry.extractant_concentration(system))
        add(f"{c.name}.temperature_k", c.chemistry.temperature_k)
        for s in els:
            add(f"{c.name}.ln_d_offset.{s}", 0.0)
        if c.stage_efficiency is not None:
            add(f"{c.name}.stage_efficiency", c.stage_efficiency)
        organic_fed = c.feed.endswith(".loaded_organic") or (
            c.feed in feed_conc and spec.feed(c.feed).phase == "organic"
        )
        lay = CircuitLayout(
            name=c.name,
            index=ci,
            system=system,
            elements=els,
            n_extraction=c.extraction_stages,
            n_scrub=c.scrub_stages,
            n_strip=c.strip_stages,
            feed_stage=c.feed_stage_index,
            offset=offset,
            organic_fed=organic_fed,
            spec=c,
        )
        layouts.append(lay)
        offset += lay.size
    p_sym = ca.SX.sym("p", len(names))
    pidx = {n: i for i, n in enumerate(names)}

    def P(name: str) -> ca.SX:
        return p_sym[pidx[name]]

    weights: list[ca.SX] = []

    def weight(expr: ca.SX) -> int:
        weights.append(expr)
        return len(weights) - 1

    links: list[Link] = []
    outlets: list[Outlet] = []
    built: dict[int, tuple[ca.SX, ...]] = {}
    circuit_index = {lay.name: lay.index for lay in layouts}
    stage_flows: dict[str, tuple[list[ca.SX], list[ca.SX]]] = {}
    for lay in _topological(layouts, set(feed_conc)):
        c = lay.spec
        n, m, k, N = lay.n_extraction, lay.n_scrub, lay.n_strip, lay.n_stages
        ne = lay.n_el
        G = P(f"{c.name}.organic_flow_l_per_h")
        W = P(f"{c.name}.scrub_flow_l_per_h")
        S = P(f"{c.name}.strip_flow_l_per_h")
        rho = P(f"{c.name}.reflux_fraction")
        bleed = P(f"{c.name}.organic_bleed_fraction")
        sap = P(f"{c.name}.saponification")
        c_ha = P(f"{c.name}.extractant_mol_per_l")
        # feed flow into this circuit (aqueous F_aq or organic F_org), symbolic
        F_aq: ca.SX = ca.SX(0.0)
        F_org: ca.SX = ca.SX(0.0)
        if c.feed in feed_conc:
            fs = spec.feed(c.feed)
            if fs.phase == "aqueous":
                F_aq = P(f"{fs.name}.flow_l_per_h")
            else:
                F_org = P(f"{fs.name}.flow_l_per_h")
        else:
            up_name, outlet_name = c.feed.split(".")
            up_l, up_g = stage_flows[up_name]
            up_spec = layouts[circuit_index[up_name]].spec
            if outlet_name == "raffinate":
                F_up = up_l[0]
            elif outlet_name == "strip_liquor":
                F_up = (1.0 - P(f"{up_name}.reflux_fraction")) * P(f"{up_name}.strip_flow_l_per_h")
            elif outlet_name == "loaded_organic":
                F_up = up_g[up_spec.n_stages - 1]
            else:  # pragma: no cover - outlets are validated by the spec
                raise SpecError(f"unknown outlet {outlet_name!r}", field="feed")
            if outlet_name in ("raffinate", "strip_liquor"):
                F_aq = F_up
            else:
                F_org = F_up
        # aqueous outflow per stage
        l_out = []
        fs_idx = lay.feed_stage
        for j in range(N):
            if j >= lay.strip_first:
                l_out.append(S)
            else:
                flow = W + rho * S
                if j <= fs_idx:
                    flow = flow + F_aq
                l_out.append(flow)
        g_out = []
        for j in range(N):
            g_out.append(G + (F_org if lay.organic_fed and j >= n else 0.0))
        stage_flows[c.name] = (l_out, g_out)
        # internal aqueous links j+1 -> j (not across scrub/strip boundary)
        for j in range(N - 1):
            if j + 1 == lay.strip_first:
                continue
            links.append(Link(lay.index, j, lay.index, j + 1, "aq", weight(l_out[j + 1])))
        # internal organic links j-1 -> j
        for j in range(1, N):
            links.append(Link(lay.index, j, lay.index, j - 1, "org", weight(g_out[j - 1])))
        # organic recycle and outlets
        if k > 0:
            links.append(Link(lay.index, 0, lay.index, N - 1, "org", weight(G * (1.0 - bleed))))
            outlets.append(Outlet(lay.index, f"{c.name}.organic_bleed", N - 1, "org", weight(G * bleed)))
            if lay.organic_fed:
                outlets.append(Outlet(lay.index, f"{c.name}.barren_organic", N - 1, "org", weight(F_org)))
            outlets.append(Outlet(lay.index, f"{c.name}.strip_liquor", lay.strip_first, "aq", weight((1.0 - rho) * S)))
            if m > 0:
                links.append(Link(lay.index, lay.scrub_top, lay.index, lay.strip_first, "aq", weight(rho * S)))
        else:
            outlets.append(Outlet(lay.index, f"{c.name}.loaded_organic", N - 1, "org", weight(g_out[N - 1])))
        outlets.append(Outlet(lay.index, f"{c.name}.raffinate", 0, "aq", weight(l_out[0])))
        # fresh inflows (mol/h): metals by element (aq, org) and acid (aq)
        fresh_aq = ca.SX.zeros(ne, N)
        fresh_org = ca.SX.zeros(ne, N)
        fresh_acid = ca.SX.zeros(1, N)
        if lay.scrub_top >= 0:
            fresh_acid[0, lay.scrub_top] += W * P(f"{c.name}.scrub_acid_mol_per_l")
        if k > 0:
            fresh_acid[0, N - 1] += S * P(f"{c.name}.strip_acid_mol_per_l")
        if "Na" in lay.elements:
            fresh_org[lay.elements.index("Na"), 0] += G * sap * c_ha
        if c.feed in feed_conc:
            fs = spec.feed(c.feed)
            for s, _ in feed_conc[fs.name].items():
                i = lay.elements.index(s)
                conc = P(f"{fs.name}.conc_mol_per_l.{s}")
                if fs.phase == "aqueous":
                    fresh_aq[i, fs_idx] += P(f"{fs.name}.flow_l_per_h") * conc
                else:
                    fresh_org[i, n] += P(f"{fs.name}.flow_l_per_h") * conc
            if fs.phase == "aqueous":
                fresh_acid[0, fs_idx] += P(f"{fs.name}.flow_l_per_h") * P(f"{fs.name}.acidity_mol_per_l")
        elif c.feed_acidity_mol_per_l is not None:
            fresh_acid[0, fs_idx] += F_aq * P(f"{c.name}.feed_acidity_mol_per_l")
        # stage phase volumes: mixer + settler, split by the design flow ratio (constant: the
        # settler layers are held by weirs, so a flow move does not jump the inventories)
        v_stage = c.mixer_volume_l + c.settler_volume_l
        design = ca.Function("design", [p_sym], [ca.horzcat(*l_out), ca.horzcat(*g_out)])(np.array(values))
        l_d, g_d = np.asarray(design[0]).ravel(), np.asarray(design[1]).ravel()
        va = [ca.SX(v_stage * l_d[j] / (l_d[j] + g_d[j])) for j in range(N)]
        vo = [ca.SX(v_stage * g_d[j] / (l_d[j] + g_d[j])) for j in range(N)]
        built[lay.index] = (
            ca.horzcat(*l_out),
            ca.horzcat(*g_out),
            fresh_aq,
            fresh_acid,
            fresh_org,
            ca.horzcat(*va),
            ca.horzcat(*vo),
        )
    ordered = [built[i] for i in range(len(layouts))]
    # cross-circuit feed links: a circuit fed by another circuit's outlet
    for lay in layouts:
        c = lay.spec
        if c.feed in feed_conc:
            continue
        up_name, outlet_name = c.feed.split(".")
        up = layouts[circuit_index[up_name]]
        out = next(o for o in outlets if o.circuit == up.index and o.name == c.feed)
        if out.phase == "aq":
            adjusted = c.feed_acidity_mol_per_l is not None
            links.append(Link(lay.index, lay.feed_stage, up.index, out.stage, "aq", out.weight, not adjusted))
        else:
            links.append(Link(lay.index, lay.n_extraction, up.index, out.stage, "org", out.weight))
    return Flowsheet(
        spec=spec,
        circuits=tuple(layouts),
        parameters=LabelledVector(tuple(names), np.array(values)),
        links=tuple(links),
        outlets=tuple(outlets),
        n_unknowns=offset,
        p_sym=p_sym,
        weights_sym=ca.vertcat(*weights),
        l_out_sym=tuple(b[0] for b in ordered),
        g_out_sym=tuple(b[1] for b in ordered),
        fresh_aq_sym=tuple(b[2] for b in ordered),
        fresh_acid_sym=tuple(b[3] for b in ordered),
        fresh_org_sym=tuple(b[4] for b in ordered),
        volume_aq_sym=tuple(b[5] for b in ordered),
        volume_org_sym=tuple(b[6] for b in ordered),
    )


def _topological(layouts: Sequence[CircuitLayout], feed_names: set[str]) -> list[CircuitLayout]:
    """Circuits ordered so that every circuit comes after the circuit feeding it."""
    by_name = {lay.name: lay for lay in layouts}
    order: list[CircuitLayout] = []
    done: set[str] = set()

    def visit(lay: CircuitLayout) -> None:
        if lay.name in done:
            return
        if lay.spec.feed not in feed_names:
            visit(by_name[lay.spec.feed.split(".")[0]])
        done.add(lay.name)
        order.append(lay)

    for lay in layouts:
        visit(lay)
    return order


def stage_matrix(values: Sequence[float] | np.ndarray, lay: CircuitLayout) -> np.ndarray:
    """Reshape a circuit's slice of the global unknown vector to (nv, N)."""
    return np.asarray(values).reshape(lay.n_stages, lay.nv).T
