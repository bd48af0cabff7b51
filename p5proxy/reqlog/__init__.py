"""The request log store: every request recorded in SQLite (default) or PostgreSQL.

`RequestLog` (store.py) is what the gateway and the admin page use; the backends (sqlite.py,
postgres.py) only speak SQL. `open_request_log(settings)` picks the backend from the URL.
"""

from __future__ import annotations

from .store import (COLUMNS, Backend, RequestLog, RequestLogError, default_database_url,
                    open_request_log)

__all__ = ["COLUMNS", "Backend", "RequestLog", "RequestLogError", "default_database_url",
           "open_request_log"]
