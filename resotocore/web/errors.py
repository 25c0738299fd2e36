"""One middleware maps errors to HTTP answers with a JSON body ``{"error": ...}``."""

from __future__ import annotations

import json

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from resotocore.bus.subscribers import AlreadyConnected, InvalidSubscription
from resotocore.db.store import StoreError
from resotocore.workflow.engine import UnknownWorkflow

log = structlog.get_logger(__name__)


class ClientError(ValueError):
    """The request is wrong; answered with 400."""


class NotFound(LookupError):
    """The named thing does not exist; answered with 404."""


class Conflict(RuntimeError):
    """The request clashes with the current state; answered with 409."""


class Unavailable(RuntimeError):
    """The request cannot be served now (the store refuses commits); answered with 503."""


MAX_CLOSE_REASON = 120
"""Bytes of a websocket close reason (the protocol allows 123)."""


def close_reason(text: str) -> bytes:
    """A close reason cut to the protocol's size on a character boundary: always valid UTF-8."""
    return text.encode()[:MAX_CLOSE_REASON].decode(errors="ignore").encode()


def error_json(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        return error_json(e.status, e.reason if e.text is None or e.text.startswith(f"{e.status}:") else e.text)
    except (ClientError, InvalidSubscription) as e:
        return error_json(400, str(e))
    except json.JSONDecodeError as e:
        return error_json(400, f"request body is not valid JSON: {e}")
    except ValidationError as e:
        return error_json(400, validation_message(e))
    except (NotFound, UnknownWorkflow) as e:
        return error_json(404, str(e))
    except Conflict as e:
        return error_json(409, str(e))
    except AlreadyConnected as e:
        return error_json(429, str(e))
    except Unavailable as e:
        return error_json(503, str(e))
    except StoreError as e:
        log.error("store_error", path=request.path, error=str(e))
        return error_json(503, f"storage unavailable: {e}")
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return error_json(500, "internal error; see the core's log")


def validation_message(error: ValidationError) -> str:
    """``where: what`` for each problem, ``what`` alone for one about the whole body."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else str(e["msg"]) for e in error.errors()
    )
