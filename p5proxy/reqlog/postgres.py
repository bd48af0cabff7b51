"""PostgreSQL backend (asyncpg): several gateway instances share one table."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from .store import COLUMNS, Backend

__all__ = ["PostgresBackend"]

_TYPES = {"real": "double precision", "int": "bigint", "text": "text"}
_MARK = re.compile(r"\?")
_CONNECT_TIMEOUT = 5.0
_COMMAND_TIMEOUT = 10.0


def _numbered(sql: str) -> str:
    """`?` placeholders -> `$1, $2...` (our SQL has no other question marks)."""
    counter = iter(range(1, 10_000))
    return _MARK.sub(lambda _m: f"${next(counter)}", sql)


class PostgresBackend(Backend):
    kind = "postgresql"

    def __init__(self, url: str, table: str) -> None:
        super().__init__(url, table)
        self._pool: Any = None

    async def open(self) -> None:
        pool = await asyncpg.create_pool(self.url, min_size=1, max_size=2,
                                         timeout=_CONNECT_TIMEOUT,
                                         command_timeout=_COMMAND_TIMEOUT)
        try:
            async with pool.acquire() as conn:
                # instances starting together may race to create the table: serialize them
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
                    for statement in self.ddl(_TYPES, "id bigserial PRIMARY KEY"):
                        await conn.execute(statement)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    def _need(self) -> Any:
        if self._pool is None:
            raise ConnectionError("the database is not open")
        return self._pool

    async def insert(self, rows: list[tuple[Any, ...]]) -> None:
        names = ", ".join(name for name, _ in COLUMNS)
        marks = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
        await self._need().executemany(
            f"INSERT INTO {self.table} ({names}) VALUES ({marks})", rows)

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        records = await self._need().fetch(_numbered(sql), *args)
        return [tuple(r) for r in records]

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        status: str = await self._need().execute(_numbered(sql), *args)
        # "DELETE 12", "UPDATE 3", "INSERT 0 1": the count is the last word
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0
