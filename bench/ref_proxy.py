"""Reference pass-through proxy: the yardstick the gateway is measured against, not a product.

    python bench/ref_proxy.py http://127.0.0.1:18200 --port 18190

Every request's path and body bytes go to the upstream base URL; the response streams back chunk by chunk.
"""

import argparse

import aiohttp
import uvloop
from aiohttp import web

HOP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-authorization", "proxy-connection", "content-length", "content-encoding", "accept-encoding"}
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def proxy(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    url = request.app[UPSTREAM] + request.path_qs
    async with request.app[SESSION].request(request.method, url, data=body, headers=headers) as up:
        resp = web.StreamResponse(status=up.status, headers={
            k: v for k, v in up.headers.items() if k.lower() not in HOP})
        if up.content_length is not None:
            resp.content_length = up.content_length
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def session_ctx(app: web.Application):
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as s:
        app[SESSION] = s
        yield


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("upstream")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18190)
    a = p.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[UPSTREAM] = a.upstream.rstrip("/")
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    web.run_app(app, host=a.host, port=a.port, access_log=None, handler_cancellation=True,
                print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
