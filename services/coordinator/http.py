"""The coordinator's HTTP API: what a school's clients must do, and the operator's levers.

- ``GET /schools/{id}/mode`` — the school's mode (``localStorage`` | ``hybrid`` | ``api``),
  maintenance flag and phase; what clients poll (or they read the compacted control topic).
- ``GET /schools`` — every school's phase and mode.
- ``POST /schools/{id}/cutover`` and ``POST /schools/{id}/rollback`` — with
  ``Authorization: Bearer <SCHOOLMIG_API_TOKEN>``; body ``{"actor": …, "reason": …}``.
  Without a configured token these calls are refused (503): no lever is ever open.
- ``GET /schools/{id}/changes/{client_id}/{seq}`` — where one change stands
  (``shared.ledger.outcomes``: pending, applied, waiting and for what, superseded, deleted,
  quarantined and why); ``GET /schools/{id}/changes?client_id=…&seq=…&seq=…`` — several
  (at most 1000; without ``client_id``, the school's first 1000). Open like the mode: ids only.
- ``POST /schools/{id}/timezone`` — the school's time zone (``{"timezone": "Europe/Skopje",
  "actor": …, "reason": …}``), with the bearer token; refused (409) once records were mapped
  in another zone.
- ``GET /status`` — the status page (``services.coordinator.page``), read-only, and
  ``GET /status.json`` — its figures (``shared.ledger.overview``: ids, counts, reason codes).
- ``GET /health`` — the database answers.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from services.coordinator.page import PAGE, REFRESH_S
from services.coordinator.store import CoordinatorStore
from shared.catalog.timezones import iso_utc
from shared.ledger import outcomes
from shared.ledger.overview import overview
from shared.ledger.schools import is_refusal
from shared.wire.messages import SCHOOL_ID_PATTERN, OperatorCommand, error_summary

Handle = Callable[[OperatorCommand], Awaitable[str]]


def make_api(store: CoordinatorStore, handle: Handle, token: str | None) -> web.Application:
    routes = web.RouteTableDef()
    school_path = "/schools/{school_id:" + SCHOOL_ID_PATTERN.strip("^$") + "}"

    @routes.get("/health")
    async def health(_: web.Request) -> web.Response:
        await store.pool.fetchval("SELECT 1")
        return web.json_response({"status": "ok"})

    @routes.get("/status")
    async def status_page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Content-Security-Policy": CSP})

    figures: dict[str, Any] = {"at": -REFRESH_S, "body": ""}  # read at most once per refresh, however many look
    reading = asyncio.Lock()

    @routes.get("/status.json")
    async def status_figures(_: web.Request) -> web.Response:
        async with reading:
            if time.monotonic() - figures["at"] >= REFRESH_S:
                figures["body"] = _dumps(await overview(store.pool))
                figures["at"] = time.monotonic()
        return web.Response(text=figures["body"], content_type="application/json")

    @routes.get("/schools")
    async def schools(_: web.Request) -> web.Response:
        return web.json_response(await store.schools(), dumps=_dumps)

    @routes.get(school_path + "/mode")
    async def mode(request: web.Request) -> web.Response:
        found = await store.mode_of(request.match_info["school_id"])
        if found is None:
            return web.json_response({"error": "unknown school"}, status=404)
        return web.Response(text=found.model_dump_json(), content_type="application/json")

    @routes.get(school_path + "/changes/{client_id:[A-Za-z0-9_-]{1,40}}/{seq:[0-9]{1,18}}")
    async def change(request: web.Request) -> web.Response:
        found = await outcomes.change_outcomes(
            store.pool,
            request.match_info["school_id"],
            client_id=request.match_info["client_id"],
            seqs=[int(request.match_info["seq"])],
        )
        if not found:
            return web.json_response({"error": "no such change: never received (or refused: see the outcomes topic)"}, status=404)
        return web.json_response(found[0].as_json())

    @routes.get(school_path + "/changes")
    async def changes(request: web.Request) -> web.Response:
        client_id = request.query.get("client_id")
        try:
            seqs = [int(v) for v in request.query.getall("seq", [])][:1000] or None
            if seqs and not all(0 <= n <= 2**62 for n in seqs):
                raise ValueError
        except ValueError:
            return web.json_response({"error": "seq must be a whole number from 0 to 2**62"}, status=400)
        if client_id is not None and not re.match(r"^[A-Za-z0-9_-]{1,40}$", client_id):
            return web.json_response({"error": "client_id is 1-40 letters, digits, '_' or '-'"}, status=400)
        found = await outcomes.change_outcomes(store.pool, request.match_info["school_id"], client_id=client_id, seqs=seqs)
        return web.json_response({"changes": [f.as_json() for f in found]})

    async def lever(request: web.Request, action: str) -> web.Response:
        if not token:
            return web.json_response({"error": "mutating calls are disabled: SCHOOLMIG_API_TOKEN is not set"}, status=503)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response(
                {"error": "a valid bearer token is required"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            body = await request.json() if request.can_read_body else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            command = OperatorCommand.model_validate(
                {
                    "action": action,
                    "school_id": request.match_info["school_id"],
                    "actor": str(body.get("actor") or "http"),
                    "reason": str(body.get("reason") or f"{action} requested over HTTP"),
                    **({"timezone": body.get("timezone")} if action == "set_timezone" else {}),
                }
            )
        except ValidationError as exc:
            return web.json_response({"error": f"bad request: {error_summary(exc)}"}, status=400)
        except ValueError as exc:  # not JSON
            return web.json_response({"error": f"bad request: {type(exc).__name__}"}, status=400)
        outcome = await handle(command)
        status = 409 if is_refusal(outcome) or "already" in outcome else 202
        return web.json_response({"action": action, "school_id": command.school_id, "outcome": outcome}, status=status)

    @routes.post(school_path + "/cutover")
    async def cutover(request: web.Request) -> web.Response:
        return await lever(request, "cutover")

    @routes.post(school_path + "/rollback")
    async def rollback(request: web.Request) -> web.Response:
        return await lever(request, "rollback")

    @routes.post(school_path + "/timezone")
    async def timezone(request: web.Request) -> web.Response:
        return await lever(request, "set_timezone")

    app = web.Application()
    app.add_routes(routes)
    return app


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_plain)


def _plain(value: Any) -> str:
    """Times in ISO 8601 (UTC, ``Z``), as the command line prints them."""
    return iso_utc(value) if isinstance(value, datetime) else str(value)


#: The page loads nothing from elsewhere and runs only its own script.
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'"


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
