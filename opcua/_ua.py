"""Typed constructors for asyncua values (its stubs type integers and times as NewTypes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from asyncua import ua

__all__ = ["data_value", "node_id", "status"]


def status(code: int) -> ua.StatusCode:
    """A status code from its integer value."""
    return ua.StatusCode(cast(ua.UInt32, code))


def node_id(ident: str | int, ns: int = 0) -> ua.NodeId:
    """A node id (string or numeric identifier) in namespace ``ns``."""
    return ua.NodeId(cast(Any, ident), cast(ua.Int16, ns))


def data_value(
    value: ua.Variant | None = None,
    *,
    StatusCode: ua.StatusCode | None = None,
    SourceTimestamp: datetime | None = None,
    ServerTimestamp: datetime | None = None,
) -> ua.DataValue:
    """A DataValue (value, status, timestamps)."""
    return ua.DataValue(
        value,
        StatusCode=StatusCode if StatusCode is not None else ua.StatusCode(),
        SourceTimestamp=cast(ua.DateTime | None, SourceTimestamp),
        ServerTimestamp=cast(ua.DateTime | None, ServerTimestamp),
    )
