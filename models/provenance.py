"""Provenance of numbers: where every parameter, price and composition comes from.

Every value sxtwin ships carries a :class:`Provenance`: a source key (resolved in
``models/data/sources.toml`` to a full citation), a locus (table, figure or page), and a class:

- ``MEASURED``: an experimental value from a named source's table or figure;
- ``DERIVED``: computed from measured values by a stated method (including fits to data);
- ``INTERPOLATED``: a smooth curve between measured neighbours;
- ``ESTIMATED``: no direct source, a placeholder with a stated rule, to replace by calibration;
- ``CONSTRUCTED``: made up to match disclosed aggregates (e.g. a feed basket), labelled so;
- ``DISCLOSED``: a company's published figure.

Results say which non-measured values they rest on (:func:`rests_on`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

from models.errors import DataFileError

__all__ = [
    "Provenance",
    "ProvenanceClass",
    "RestsOn",
    "Source",
    "load_sources",
    "rests_on",
    "source",
]


class ProvenanceClass(StrEnum):
    """How far to trust a value (see module docstring)."""

    MEASURED = "MEASURED"
    DERIVED = "DERIVED"
    INTERPOLATED = "INTERPOLATED"
    ESTIMATED = "ESTIMATED"
    CONSTRUCTED = "CONSTRUCTED"
    DISCLOSED = "DISCLOSED"

    @property
    def is_measured(self) -> bool:
        """True for values that rest on measurement (MEASURED, DERIVED, DISCLOSED)."""
        return self in (ProvenanceClass.MEASURED, ProvenanceClass.DERIVED, ProvenanceClass.DISCLOSED)


@dataclass(frozen=True)
class Provenance:
    """Where one value comes from.

    Attributes
    ----------
    source
        Key into ``sources.toml`` (several keys joined by ``+``).
    locus
        Table, figure, page or method within the source.
    cls
        The provenance class.
    note
        Free text: caveats, how a derived value was computed.
    """

    source: str
    locus: str
    cls: ProvenanceClass
    note: str = ""

    @classmethod
    def parse(cls, source: str, locus: str, klass: str, note: str = "", *, where: str) -> Provenance:
        """Build from raw strings, raising :class:`DataFileError` naming ``where`` on a gap."""
        if not str(source).strip():
            raise DataFileError(f"{where}: value has no source", field=where)
        if not str(locus).strip():
            raise DataFileError(f"{where}: value has no locus (table, figure or method)", field=where)
        try:
            pc = ProvenanceClass(str(klass).strip())
        except ValueError:
            allowed = ", ".join(c.value for c in ProvenanceClass)
            raise DataFileError(f"{where}: class {klass!r} is not one of {allowed}", field=where) from None
        for key in str(source).split("+"):
            if key.strip() not in load_sources():
                raise DataFileError(f"{where}: source key {key.strip()!r} is not in sources.toml", field=where)
        return cls(str(source).strip(), str(locus).strip(), pc, str(note or "").strip())

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"source": self.source, "locus": self.locus, "class": self.cls.value, "note": self.note}


@dataclass(frozen=True)
class Source:
    """A full citation."""

    key: str
    citation: str
    doi: str = ""
    url: str = ""
    note: str = ""


@cache
def load_sources() -> Mapping[str, Source]:
    """All sources from ``models/data/sources.toml``, by key."""
    text = resources.files("models").joinpath("data/sources.toml").read_text(encoding="utf-8")
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"sources.toml: {exc}") from None
    out: dict[str, Source] = {}
    for key, entry in raw.items():
        if not isinstance(entry, dict) or not str(entry.get("citation", "")).strip():
            raise DataFileError(f"sources.toml: [{key}] needs a 'citation'", field=key)
        out[key] = Source(
            key=key,
            citation=str(entry["citation"]),
            doi=str(entry.get("doi", "")),
            url=str(entry.get("url", "")),
            note=str(entry.get("note", "")),
        )
    return out


def source(key: str) -> Source:
    """One source by key."""
    sources = load_sources()
    if key not in sources:
        raise DataFileError(f"unknown source key {key!r}", field="source")
    return sources[key]


@dataclass(frozen=True)
class RestsOn:
    """One non-measured value a result depends on."""

    parameter: str
    cls: ProvenanceClass
    source: str
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"parameter": self.parameter, "class": self.cls.value, "source": self.source, "note": self.note}


def rests_on(values: Iterable[tuple[str, Provenance]]) -> tuple[RestsOn, ...]:
    """The ESTIMATED, CONSTRUCTED and INTERPOLATED values among named provenances, sorted."""
    out = {name: RestsOn(name, p.cls, p.source, p.note) for name, p in values if not p.cls.is_measured}
    return tuple(out[k] for k in sorted(out))
