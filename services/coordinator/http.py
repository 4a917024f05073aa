"""The coordinator's HTTP API: what a school's clients must do, and the operator's levers.

- ``GET /schools/{id}/mode`` — the school's mode (``localStorage`` | ``hybrid`` | ``api``),
  maintenance flag and phase; what clients poll (or they read the compacted control topic).
- ``GET /schools`` — every school's phase and mode.
- ``POST /schools/{id}/cutover`` and ``POST /schools/{id}/rollback`` — with
  ``Authorization: Bearer <SCHOOLMIG_API_TOKEN>``; body ``{"actor": …, "reason": …}``.
  Without a configured token these calls are refused (503): no lever is ever open.
- ``GET /health`` — the database answers.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.coordinator.store import CoordinatorStore
from shared.messages import SCHOOL_ID_PATTERN, OperatorCommand

Handle = Callable[[OperatorCommand], Awaitable[str]]


def make_api(store: CoordinatorStore, handle: Handle, token: str | None) -> web.Application:
    routes = web.RouteTableDef()
    school_path = "/schools/{school_id:" + SCHOOL_ID_PATTERN.strip("^$") + "}"

    @routes.get("/health")
    async def health(_: web.Request) -> web.Response:
        await store.pool.fetchval("SELECT 1")
        return web.json_response({"status": "ok"})

    @routes.get("/schools")
    async def schools(_: web.Request) -> web.Response:
        return web.json_response(await store.schools(), dumps=_dumps)

    @routes.get(school_path + "/mode")
    async def mode(request: web.Request) -> web.Response:
        found = await store.mode_of(request.match_info["school_id"])
        if found is None:
            return web.json_response({"error": "unknown school"}, status=404)
        return web.Response(text=found.model_dump_json(), content_type="application/json")

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
            command = OperatorCommand(
                action=action,  # type: ignore[arg-type]
                school_id=request.match_info["school_id"],
                actor=str(body.get("actor") or "http"),
                reason=str(body.get("reason") or f"{action} requested over HTTP"),
            )
        except ValueError as exc:  # not JSON, or not a valid command (pydantic's errors are ValueErrors)
            return web.json_response({"error": f"bad request: {type(exc).__name__}"}, status=400)
        outcome = await handle(command)
        status = 409 if outcome.startswith("refused") or "already" in outcome else 202
        return web.json_response({"action": action, "school_id": command.school_id, "outcome": outcome}, status=status)

    @routes.post(school_path + "/cutover")
    async def cutover(request: web.Request) -> web.Response:
        return await lever(request, "cutover")

    @routes.post(school_path + "/rollback")
    async def rollback(request: web.Request) -> web.Response:
        return await lever(request, "rollback")

    app = web.Application()
    app.add_routes(routes)
    return app


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
