"""The exporter's web app: ``/metrics`` (Prometheus text format) and ``/health`` (JSON), on aiohttp.

Neither route talks to the core: both answer from what the last update left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from resotometrics.exporter import Exporter

log = structlog.get_logger(__name__)

EXPORTER = web.AppKey("exporter", Exporter)
CONNECTED: web.AppKey[Callable[[], bool]] = web.AppKey("core_connected")
SHUTDOWN_TIMEOUT = 5.0

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    # rendering is CPU work proportional to the number of series: keep it off the event loop
    body = await asyncio.to_thread(request.app[EXPORTER].render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.json_response(request.app[EXPORTER].health(request.app[CONNECTED]()))


def create_app(exporter: Exporter, core_connected: Callable[[], bool] = lambda: False) -> web.Application:
    app = web.Application()
    app[EXPORTER] = exporter
    app[CONNECTED] = core_connected
    app.add_routes(routes)
    return app


@asynccontextmanager
async def web_server(app: web.Application, host: str, port: int) -> AsyncIterator[list[str]]:
    """Serve ``app`` on host:port (port 0: any free port) until the block ends; yields the URLs served."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        urls = []
        for address in runner.addresses:
            shown = f"[{address[0]}]" if ":" in address[0] else address[0]
            urls.append(f"http://{shown}:{address[1]}")
            log.info("listening", url=urls[-1])
        yield urls
    finally:
        await runner.cleanup()
