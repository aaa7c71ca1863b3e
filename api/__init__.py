"""The control-room API (FastAPI) and dashboard of the sxtwin live twin.

Build the application with :func:`create_app`; nothing is created at import.
"""

from api.app import ApiOptions, create_app

__all__ = ["ApiOptions", "create_app"]
