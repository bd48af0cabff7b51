"""SQLite backend: the stdlib sqlite3 on one dedicated thread (the event loop never blocks)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .store import COLUMNS, Backend

__all__ = ["SQLiteBackend"]

T = TypeVar("T")
_TYPES = {"real": "REAL", "int": "INTEGER", "text": "TEXT"}

# sqlite3 binds int, float and str directly, but sends None through its adapter lookup, which
# formats two AttributeErrors (no __adapt__, no __conform__) before binding NULL: a row's half
# dozen empty columns made that 40% of the insert, with the GIL held. An adapter registered for
# NoneType that returns None (a C method, no Python frame) binds the same NULL without them.
_NONE_IS_NULL: Callable[[None], None] = {}.get   # type: ignore[assignment]
sqlite3.register_adapter(type(None), _NONE_IS_NULL)


def sqlite_path(url: str) -> str:
    """sqlite:///relative.db, sqlite:////abs/path.db, sqlite:///:memory: -> a path."""
    path = url[len("sqlite://"):]
    if path.startswith("/"):   # the separator after the (empty) host
        path = path[1:]
    return path or ":memory:"


class SQLiteBackend(Backend):
    kind = "sqlite"

    def __init__(self, url: str, table: str) -> None:
        super().__init__(url, table)
        self.path = sqlite_path(url)
        self._db: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None or self._db is None:
            raise sqlite3.OperationalError("the database is not open")
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, db)

    async def open(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p5proxy-sqlite")
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._pool, self._connect)

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False,
                             isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in self.ddl(_TYPES, "id INTEGER PRIMARY KEY"):
                db.execute(statement)
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        db, pool = self._db, self._pool
        self._db = self._pool = None
        if pool is not None:
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(pool, db.close)
            pool.shutdown(wait=False)

    async def insert(self, rows: list[tuple[Any, ...]]) -> None:
        names = ", ".join(name for name, _ in COLUMNS)
        group = "(" + ", ".join("?" for _ in COLUMNS) + ")"

        def run(db: sqlite3.Connection) -> None:
            # Many rows per INSERT, not executemany: sqlite3 takes and gives back the GIL around
            # every statement, and on a busy one-core gateway each hand-over costs the event loop
            # far more than the insert itself. One statement per chunk hands over once.
            per = max(1, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS))
            with db:   # one transaction per batch
                db.execute("BEGIN")
                for at in range(0, len(rows), per):
                    chunk = rows[at:at + per]
                    db.execute(f"INSERT INTO {self.table} ({names}) VALUES "
                               + ", ".join([group] * len(chunk)),
                               [value for row in chunk for value in row])
        await self._call(run)

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._call(lambda db: db.execute(sql, list(args)).fetchall())

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        def run(db: sqlite3.Connection) -> int:
            return db.execute(sql, list(args)).rowcount
        return await self._call(run)
