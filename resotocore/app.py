"""The aiohttp application and the serve loop of the daemon."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

import structlog
from aiohttp import web

from resotocore.clock import Clock
from resotocore.config import CoreConfig
from resotocore.core import CORE, core_context
from resotocore.web import api, graph_api, openapi, websockets
from resotocore.web.auth import VERIFIER, OffLoopVerifier, auth_middleware
from resotocore.web.errors import error_middleware
from resotocore.workflow.model import Workflow

log = structlog.get_logger(__name__)


def create_app(
    config: CoreConfig, clock: Clock | None = None, workflows: Sequence[Workflow] | None = None
) -> web.Application:
    verifier = OffLoopVerifier(config.psk) if config.psk else None
    middlewares = [error_middleware] + ([auth_middleware(verifier)] if verifier else [])
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_size)
    app[VERIFIER] = verifier
    app.add_routes(api.routes)
    app.add_routes(websockets.routes)
    app.add_routes(graph_api.routes)
    app.add_routes(openapi.routes)
    app.cleanup_ctx.append(core_context(config, clock, workflows))

    async def close_websockets(app: web.Application) -> None:
        if CORE in app:
            await app[CORE].close_websockets()

    app.on_shutdown.append(close_websockets)
    return app


def listen_url(scheme: str, host: str, port: int) -> str:
    """The URL of a listening address; an IPv6 address goes in brackets (``http://[::1]:8900``)."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def serve(config: CoreConfig, stop: asyncio.Event | None = None) -> None:
    """Run the core until SIGINT/SIGTERM (or `stop` is set), then shut down cleanly."""
    tls = config.ssl_context()  # before the store is opened: a bad certificate changes nothing
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        create_app(config), access_log=None, handle_signals=False, shutdown_timeout=config.shutdown_timeout
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=tls)
        await site.start()
        scheme = "https" if tls else "http"
        for address in runner.addresses:
            log.info("listening", url=listen_url(scheme, address[0], address[1]), auth="psk" if config.psk else "none")
        await stop.wait()
        log.info("shutting_down")
    finally:
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("stopped")
