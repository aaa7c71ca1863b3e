"""Labelled vectors: values with their names, so no bare positional index crosses a boundary."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.errors import InputError

__all__ = ["LabelledVector"]


@dataclass(frozen=True)
class LabelledVector:
    """An immutable vector whose entries are named (elements, stages, tags).

    Attributes
    ----------
    names
        Ordered, unique names.
    values
        Float values, one per name (a read-only copy).
    unit
        Unit of every entry (for example ``mol/L``), declared once.
    """

    names: tuple[str, ...]
    values: npt.NDArray[np.float64]
    unit: str = ""
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vals = np.array(self.values, dtype=float).reshape(-1)
        if vals.shape[0] != len(self.names):
            raise InputError(f"LabelledVector: {len(self.names)} names but {vals.shape[0]} values", field="values")
        if len(set(self.names)) != len(self.names):
            raise InputError(f"LabelledVector: repeated names in {self.names}", field="names")
        vals.setflags(write=False)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.names)})

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, float], names: Iterable[str] | None = None, unit: str = ""
    ) -> LabelledVector:
        """Build from a mapping; ``names`` fixes the order and fills missing names with 0."""
        order = tuple(names) if names is not None else tuple(mapping)
        unknown = set(mapping) - set(order)
        if unknown:
            raise InputError(f"names {sorted(unknown)} are not among {order}", field="names")
        return cls(order, np.array([float(mapping.get(n, 0.0)) for n in order]), unit)

    def __getitem__(self, name: str) -> float:
        try:
            return float(self.values[self._index[name]])
        except KeyError:
            raise InputError(f"{name!r} is not one of {self.names}", field="name") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        """Position of ``name``."""
        return self._index[name]

    def to_dict(self) -> dict[str, float]:
        """Name to value."""
        return {n: float(v) for n, v in zip(self.names, self.values, strict=True)}

    def total(self) -> float:
        """Sum of all entries."""
        return float(self.values.sum())
