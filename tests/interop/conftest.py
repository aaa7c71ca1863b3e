"""The interop tests reuse the OPC UA test fixtures (users, caches)."""

from tests.opcua.conftest import credentials, opcua_cache

__all__ = ["credentials", "opcua_cache"]
