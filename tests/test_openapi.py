"""docs/openapi.yaml against the real gateway: schemathesis generates requests from it (valid
and invalid), sends them over a real socket to a gateway in front of the fake upstreams, and
checks that nothing is answered with a 5xx, and that answers match the documented statuses,
content types and schemas. Bounded: 20 examples per operation and generation mode, derandomized
(the same every run) unless P5PROXY_FUZZ_EXAMPLES asks for a larger random exploration."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from p5proxy.config import config_from_dict
from tests.conftest import app_for, gateway_config
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI

SPEC = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
# CI runs a fixed, bounded set of examples; P5PROXY_FUZZ_EXAMPLES=500 explores at random
FUZZ = int(os.environ.get("P5PROXY_FUZZ_EXAMPLES", "0"))
KEY = "sk-schemathesis-key"

schema = schemathesis.openapi.from_path(str(SPEC))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


class LiveGateway:
    """The fakes and the gateway on their own event loop in a thread, so that schemathesis'
    blocking client can call them over real sockets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runners: list[web.AppRunner] = []
        self.url = ""
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def _start(self) -> None:
        oa_url = await self._serve(FakeOpenAI().app()) + "/v1"
        an_url = await self._serve(FakeAnthropic().app())
        cfg = gateway_config(oa_url, an_url, auth={"keys": [KEY]})
        cfg["models"]["*"] = {"provider": "oa"}   # any generated name reaches an upstream
        config = config_from_dict(cfg)
        self.url = await self._serve(app_for(config))

    async def _stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()

    def __enter__(self) -> LiveGateway:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveGateway]:
    with LiveGateway() as gw:
        yield gw


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def test_the_description_is_openapi_3_1_and_covers_every_route() -> None:
    doc = yaml.safe_load(SPEC.read_text())
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) >= {"/v1/messages", "/v1/messages/count_tokens",
                                 "/v1/chat/completions", "/v1/models", "/v1/models/{model_id}",
                                 "/health", "/"}


@pytest.mark.timeout(60 if not FUZZ else 3600)
@schema.parametrize()
@settings(max_examples=FUZZ or 20, deadline=None, derandomize=not FUZZ,
          suppress_health_check=list(HealthCheck))
def test_generated_requests_get_no_server_error(case: Any, live: LiveGateway,
                                               session: requests.Session) -> None:
    case.call_and_validate(
        base_url=live.url, session=session, timeout=20,
        headers={"x-api-key": KEY},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance])
