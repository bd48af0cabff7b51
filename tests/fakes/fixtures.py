"""pytest helpers: start a fake on a loopback port and wait for its counters.

Use the fixtures from a conftest or test module with
`from tests.fakes.fixtures import fake_openai, fake_anthropic  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from .anthropic_upstream import FakeAnthropic
from .base import FakeUpstream
from .openai_upstream import FakeOpenAI

__all__ = ["eventually", "fake_anthropic", "fake_openai", "start_fake"]

F = TypeVar("F", bound=FakeUpstream)


async def start_fake(aiohttp_server: Any, fake: F) -> tuple[F, str]:
    """Serve `fake` on 127.0.0.1 and return it with its SDK base URL.

    OpenAI base URLs end with `/v1`; Anthropic ones do not (the SDK adds it).
    """
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    root = f"http://127.0.0.1:{server.port}"
    return fake, root + "/v1" if isinstance(fake, FakeOpenAI) else root


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait until `condition()` holds, e.g. `fake.cancelled == 1` after a disconnect."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def fake_openai(aiohttp_server: Any) -> tuple[FakeOpenAI, str]:
    return await start_fake(aiohttp_server, FakeOpenAI())


@pytest.fixture
async def fake_anthropic(aiohttp_server: Any) -> tuple[FakeAnthropic, str]:
    return await start_fake(aiohttp_server, FakeAnthropic())
