"""The admin page over plain HTTP: auth (disabled, wrong key, client key, cookie, CSRF),
masking, the request log's filters and pagination, the overview, reload and "try it"."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from p5proxy.admin.auth import COOKIE, new_session
from tests.admin_support import (ADMIN_KEY, CLIENT_KEY, AdminGateway, csrf_of, login,
                                 send_traffic, start_admin_gateway, wait_rows)
from tests.fakes.replies import Reply

CHAT = "/v1/chat/completions"


def jar_session(**kwargs: Any) -> aiohttp.ClientSession:
    # unsafe=True: keep cookies set by an IP address host (127.0.0.1)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), **kwargs)


@pytest.fixture
async def gw(aiohttp_server: Any, tmp_path: Path, fake_openai: Any,
             fake_anthropic: Any) -> AdminGateway:
    return await start_admin_gateway(aiohttp_server, tmp_path, fake_openai, fake_anthropic,
                                     auth={"keys": [CLIENT_KEY]})


async def test_without_an_admin_key_the_page_does_not_exist(
        aiohttp_server: Any, tmp_path: Path, fake_openai: Any, fake_anthropic: Any) -> None:
    gw = await start_admin_gateway(aiohttp_server, tmp_path, fake_openai, fake_anthropic,
                                   admin=False)
    async with jar_session() as s:
        for path in ("/admin", "/admin/login", "/admin/log", "/admin/config"):
            async with s.get(gw.url + path, allow_redirects=False) as resp:
                assert resp.status == 404, path
        async with s.post(gw.url + "/admin/login", data={"key": "anything-at-all"}) as resp:
            assert resp.status == 404


async def test_login_wrong_key_client_key_and_cookie(gw: AdminGateway) -> None:
    async with jar_session() as s:
        async with s.get(gw.url + "/admin/log?model=x", allow_redirects=False) as resp:
            assert resp.status == 303
            location = URL(resp.headers["Location"])
            assert location.path == "/admin/login"
            assert location.query["next"] == "/admin/log?model=x"
        # a client key opens nothing, as a header or as the login key
        for headers in ({"Authorization": f"Bearer {CLIENT_KEY}"}, {"x-api-key": CLIENT_KEY}):
            async with s.get(gw.url + "/admin", headers=headers, allow_redirects=False) as resp:
                assert resp.status == 303
        for key in (CLIENT_KEY, "wrong-admin-key-123456", ""):
            async with s.post(gw.url + "/admin/login", data={"key": key}) as resp:
                assert resp.status == 401
                assert "Wrong admin key" in await resp.text()
        assert not s.cookie_jar.filter_cookies(gw.url + "/admin")
        # and the admin key is not a client key
        async with s.post(gw.url + CHAT, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                          json={"model": "gpt-4o", "messages": [
                              {"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 401
        async with s.post(gw.url + "/admin/login", allow_redirects=False,
                          data={"key": ADMIN_KEY, "next": "/admin/log"}) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/admin/log"
            cookie = resp.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
        # a login redirect never leaves the admin page
        async with s.post(gw.url + "/admin/login", allow_redirects=False,
                          data={"key": ADMIN_KEY, "next": "//evil.example/admin"}) as resp:
            assert resp.headers["Location"] == "/admin"
        async with s.get(gw.url + "/admin/log") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
            csrf = csrf_of(await resp.text())
        async with s.post(gw.url + "/admin/logout", data={"csrf": csrf},
                          allow_redirects=False) as resp:
            assert resp.status == 303
        async with s.get(gw.url + "/admin", allow_redirects=False) as resp:
            assert resp.status == 303


async def test_forged_and_expired_cookies_are_refused(gw: AdminGateway) -> None:
    admin = gw.state.config.admin
    expired = new_session(admin, now=time.time() - admin.session_secs - 5)
    valid = new_session(admin)
    expiry, sid, sig = valid.split(".")
    forged = [expired, f"{int(expiry) + 999999}.{sid}.{sig}", f"{expiry}.other.{sig}", "x", ""]
    async with aiohttp.ClientSession() as s:
        for cookie in forged:
            async with s.get(gw.url + "/admin", headers={"Cookie": f"{COOKIE}={cookie}"},
                             allow_redirects=False) as resp:
                assert resp.status == 303, cookie
        async with s.get(gw.url + "/admin", headers={"Cookie": f"{COOKIE}={valid}"},
                         allow_redirects=False) as resp:
            assert resp.status == 200


async def test_post_actions_need_the_csrf_token(gw: AdminGateway) -> None:
    async with jar_session() as s:
        csrf = await login(s, gw.url)
        for data in ({}, {"csrf": "0" * 40}, {"csrf": csrf[:-1] + ("0" if csrf[-1] != "0" else "1")}):
            async with s.post(gw.url + "/admin/reload", data=data) as resp:
                assert resp.status == 403
                assert "CSRF" in await resp.text()
            async with s.post(gw.url + "/admin/try", data={**data, "model": "gpt-4o"}) as resp:
                assert resp.status == 403
        assert gw.state.reloads == []   # nothing was done
        async with s.post(gw.url + "/admin/reload", data={"csrf": csrf}) as resp:
            assert resp.status == 200
        assert len(gw.state.reloads) == 1
    async with jar_session() as other:   # a cross-site login form is refused
        async with other.post(gw.url + "/admin/login", data={"key": ADMIN_KEY},
                              headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403


async def test_secrets_are_masked_everywhere(aiohttp_server: Any, tmp_path: Path,
                                             fake_openai: Any, fake_anthropic: Any) -> None:
    secrets = {"upstream": "sk-upstream-secret-key-7731", "second": "sk-second-secret-key-8842",
               "header": "hdr-secret-token-5521", "client": CLIENT_KEY,
               "dbpass": "db-password-9931", "redis": "redis-password-4410",
               "query": "query-secret-6651"}

    def configure(cfg: dict[str, Any]) -> None:
        cfg["providers"]["oa"].update(api_key=secrets["upstream"], api_keys=[secrets["second"]],
                                      headers={"Authorization": f"Bearer {secrets['header']}",
                                               "x-team": "blue"})
        cfg["providers"]["an"]["base_url"] += f"?api_key={secrets['query']}"

    gw = await start_admin_gateway(
        aiohttp_server, tmp_path, fake_openai, fake_anthropic, auth={"keys": [CLIENT_KEY]},
        plugins={"audit": {"database_url": f"postgresql://app:{secrets['dbpass']}@db/x",
                           "cache": f"redis://:{secrets['redis']}@127.0.0.1:6379/0",
                           "password": "plain-password-value"}})
    configure(gw.cfg)
    gw.config_path.write_text(__import__("yaml").safe_dump(gw.cfg))
    async with jar_session() as s:
        csrf = await login(s, gw.url)
        async with s.post(gw.url + "/admin/reload", data={"csrf": csrf}) as resp:
            reloaded = await resp.text()
            assert resp.status == 200, reloaded
        pages = [reloaded]
        for path in ("/admin/config", "/admin/providers"):
            async with s.get(gw.url + path) as resp:
                pages.append(await resp.text())
    for text in pages:
        for name, secret in secrets.items():
            assert secret not in text, name
        assert ADMIN_KEY not in text and gw.state.config.admin.key_sha256 not in text
        assert "plain-password-value" not in text
    config_page, providers_page = pages[1], pages[2]
    assert "****7731" in config_page and "****8842" in config_page   # tell keys apart
    assert "x-team: blue" in config_page                            # non-secrets stay
    assert "postgresql://app:****@db/x" in config_page
    assert "redis://:****@127.0.0.1:6379/0" in config_page
    assert "api_key=****" in config_page
    assert "****7731, ****8842" in providers_page


async def test_request_log_filters_pagination_and_details(gw: AdminGateway,
                                                          fake_openai: Any) -> None:
    await send_traffic(gw, fake_openai[0])
    await wait_rows(gw, 8)

    async def log_page(s: aiohttp.ClientSession, query: str) -> tuple[int, str]:
        async with s.get(gw.url + "/admin/log?" + query) as resp:
            return resp.status, await resp.text()

    def total(text: str) -> int:
        return int(text.split('<span id="log-total">')[1].split(" ")[0])

    async with jar_session() as s:
        await login(s, gw.url)
        _, text = await log_page(s, "")
        assert total(text) == 8
        assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        _, text = await log_page(s, "model=gpt-4o")
        assert total(text) == 5 and text.count('<span class="model">gpt-4o</span>') == 5
        _, text = await log_page(s, "model=gpt-4o&status=ok")
        assert total(text) == 4
        _, text = await log_page(s, "status=error")
        assert total(text) == 2
        _, text = await log_page(s, "status=4xx")
        assert total(text) == 1
        _, text = await log_page(s, "model=claude-sonnet-4-5&status=200")
        assert total(text) == 2
        _, text = await log_page(s, "key=no-such-key-id")
        assert total(text) == 0
        future = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 3600))
        _, text = await log_page(s, f"since={future}")
        assert total(text) == 0
        _, text = await log_page(s, f"until={future}")
        assert total(text) == 8
        status, text = await log_page(s, "since=yesterday")
        assert status == 400 and "From: expected a date and time" in text
        status, text = await log_page(s, "status=teapot")
        assert status == 400
        # pagination: 5 a page, newest first
        _, first = await log_page(s, "per=5")
        assert "page 1 of 2" in first and 'rel="older"' in first and 'rel="newer"' not in first
        _, second = await log_page(s, "per=5&page=2")
        assert "page 2 of 2" in second and 'rel="newer"' in second
        assert first.count("/admin/log/") + second.count("/admin/log/") >= 8
        assert second.count('<span class="model">') == 3
        # the error's details, escaped
        rows, _ = await gw.state.request_log.query(status="5xx")   # type: ignore[union-attr]
        async with s.get(gw.url + f"/admin/log/{rows[0]['request_id']}") as resp:
            detail = await resp.text()
        assert resp.status == 200 and 'id="error-message"' in detail
        assert "upstream &lt;b&gt;exploded&lt;/b&gt;" in detail and "<b>exploded" not in detail
        async with s.get(gw.url + "/admin/log/req_missing") as resp:
            assert resp.status == 404


async def test_overview_shows_the_traffic(gw: AdminGateway, fake_openai: Any) -> None:
    await send_traffic(gw, fake_openai[0])
    await wait_rows(gw, 8)
    async with jar_session() as s:
        await login(s, gw.url)
        for window in ("15m", "1h", "24h"):
            async with s.get(gw.url + f"/admin?window={window}") as resp:
                text = await resp.text()
            assert resp.status == 200
            assert '<div class="tile" id="tile-requests">Requests<b>8</b>' in text
            assert "<b>75.0 %</b>" in text   # 6 of 8 succeeded
            for chart in ("rpm", "success", "latency", "ttft", "tokens", "cache"):
                assert f'id="chart-{chart}"' in text
            assert text.count("<rect ") >= 1 and ("<polyline" in text or "<circle" in text)


async def test_admin_reload_applies_or_rejects(gw: AdminGateway) -> None:
    async with jar_session() as s:
        csrf = await login(s, gw.url)
        def change(cfg: dict[str, Any]) -> None:
            cfg["models"]["gpt-new"] = {"provider": "oa"}
            cfg["server"]["pool_limit"] = 7
            cfg["logs"]["table"] = "elsewhere"

        gw.rewrite(change)
        async with s.post(gw.url + "/admin/reload", data={"csrf": csrf}) as resp:
            text = await resp.text()
        assert resp.status == 200 and "Configuration reloaded" in text
        assert "models added: gpt-new" in text
        assert "server settings not applied (restart needed): pool_limit" in text
        assert "logs not applied (restart needed)" in text
        assert "gpt-new" in gw.state.router.model_names()
        assert gw.state.config.server.pool_limit == 1000    # kept until a restart
        assert gw.state.config.logs.table == "p5proxy_requests"
        gw.rewrite(lambda cfg: cfg["models"].update({"bad": {"provider": "nowhere"},
                                                     "gpt-newer": {"provider": "oa"}}))
        async with s.post(gw.url + "/admin/reload", data={"csrf": csrf}) as resp:
            text = await resp.text()
        assert resp.status == 422 and "rejected" in text
        assert "models.bad.provider: unknown provider &#x27;nowhere&#x27;" in text
        assert "gpt-newer" not in gw.state.router.model_names()
        async with s.get(gw.url + "/admin/config") as resp:
            text = await resp.text()
        assert text.count('<span class="bad">rejected</span>') == 1
        assert text.count('<span class="ok">applied</span>') == 1


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [True, False])
async def test_try_it_goes_through_the_gateway(gw: AdminGateway, fake_openai: Any,
                                               protocol: str, stream: bool) -> None:
    fake = fake_openai[0]
    fake.replies.append(Reply(text="Hi <there> from the upstream", chunk_size=5))
    async with jar_session() as s:
        csrf = await login(s, gw.url)
        form = {"csrf": csrf, "model": "gpt-4o", "protocol": protocol, "max_tokens": "32",
                "prompt": "hello?"}
        if stream:
            form["stream"] = "1"
        async with s.post(gw.url + "/admin/try", data=form) as resp:
            text = await resp.text()
    assert resp.status == 200
    assert '<pre id="try-answer">Hi &lt;there&gt; from the upstream</pre>' in text
    assert fake.last.json["model"] == "gpt-4o-upstream"
    assert fake.last.json["messages"][-1]["content"] == "hello?"
    assert fake.last.headers.get("authorization") != f"Bearer {CLIENT_KEY}"   # not forwarded
    assert "gateway overhead" in text and 'id="try-total"' in text
    await wait_rows(gw, 1)
    rows, _ = await gw.state.request_log.query()   # type: ignore[union-attr]
    assert rows[0]["model"] == "gpt-4o" and rows[0]["stream"] is stream
    assert rows[0]["request_id"] in text   # linked to its log entry


async def test_try_it_shows_an_error(gw: AdminGateway) -> None:
    async with jar_session() as s:
        csrf = await login(s, gw.url)
        async with s.post(gw.url + "/admin/try", data={
                "csrf": csrf, "model": "gpt-4o", "other_model": "no-such-model<i>",
                "protocol": "openai", "stream": "1", "max_tokens": "5", "prompt": "x"}) as resp:
            text = await resp.text()
    assert resp.status == 200 and 'id="try-error"' in text
    assert "no-such-model&lt;i&gt;" in text and "no-such-model<i>" not in text
    assert "HTTP status</td><td>404" in text.replace('<td class=n>', "<td>")


def test_admin_settings(tmp_path: Path) -> None:
    import hashlib

    from p5proxy.config import config_from_dict, load_config
    from p5proxy.errors import ConfigError

    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    assert config_from_dict({}).admin.enabled is False
    assert config_from_dict({"admin": {"key": ADMIN_KEY}}).admin.key_sha256 == digest
    assert config_from_dict({"admin": {"key_sha256": digest.upper()}}).admin.key_sha256 == digest
    path = tmp_path / "c.yaml"
    path.write_text("admin: {session_secs: 600}\n")
    config = load_config(path, env={"P5PROXY_ADMIN_KEY": ADMIN_KEY})   # the environment wins
    assert config.admin.key_sha256 == digest and config.admin.session_secs == 600
    with pytest.raises(ConfigError) as err:
        config_from_dict({"auth": {"keys": [CLIENT_KEY]}, "admin": {
            "key_sha256": hashlib.sha256(CLIENT_KEY.encode()).hexdigest(), "colour": "red",
            "session_secs": 5}})
    assert err.value.problems == [
        "admin.colour: unknown setting (known: key, key_sha256, session_secs)",
        "admin.key_sha256: must differ from every client key in auth.keys",
        "admin.session_secs: must be at least 60, got 5.0"]
    with pytest.raises(ConfigError) as err:
        config_from_dict({"admin": {"key": "short", "key_sha256": "xyz"}})
    assert err.value.problems == ["admin: give either key or key_sha256, not both",
                                  "admin.key: must be at least 12 characters long"]


async def test_the_cookie_is_secure_behind_a_local_https_proxy(gw: AdminGateway) -> None:
    async with aiohttp.ClientSession() as s:
        for headers, secure in (({}, False), ({"X-Forwarded-Proto": "https"}, True)):
            async with s.post(gw.url + "/admin/login", data={"key": ADMIN_KEY}, headers=headers,
                              allow_redirects=False) as resp:
                assert resp.status == 303
                assert ("Secure" in resp.headers["Set-Cookie"]) is secure
