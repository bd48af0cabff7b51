"""Helpers for the request log tests: a gateway whose app state the test can reach, and a
database URL per backend (SQLite in the test's directory; PostgreSQL from DATABASE_URL, else
127.0.0.1:5432 database `test`, with a table unique to the test that is dropped afterwards)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from p5proxy.app import GatewayState
from p5proxy.appkeys import STATE
from p5proxy.config import config_from_dict
from tests.conftest import app_for, gateway_config

__all__ = ["LiveGateway", "start_live", "pg_url", "Database", "database"]

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def pg_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_PG


@dataclass
class LiveGateway:
    url: str
    state: GatewayState
    server: Any


async def start_live(aiohttp_server: Any, fake_openai: Any, fake_anthropic: Any,
                     **overrides: Any) -> LiveGateway:
    cfg = gateway_config(fake_openai[1], fake_anthropic[1], **overrides)
    app = app_for(config_from_dict(cfg))
    server = await aiohttp_server(app, host="127.0.0.1")
    return LiveGateway(f"http://127.0.0.1:{server.port}", app[STATE], server)


@dataclass
class Database:
    kind: str
    url: str
    table: str

    def logs(self, **extra: Any) -> dict[str, Any]:
        return {"database_url": self.url, "table": self.table, "flush_secs": 0.05, **extra}


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: Any, tmp_path: Any) -> AsyncIterator[Database]:
    table = f"p5test_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp_path}/requests.db", table)
        return
    url = pg_url()
    yield Database("postgresql", url, table)
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await conn.close()
