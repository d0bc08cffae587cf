"""The admin app: console pages (`admin.console`) and the REST API (`admin.api`, `/api/v1`).

    uvicorn --factory admin.app:create_admin_app --no-server-header

One Temporal client and one engine per process, made in the lifespan and shared through
`app.state`: `settings`, `engine`, `temporal` and `invitations` (an `InvitationsClient`, the
same validation and errors as `starter.py`). Routers are added below as they exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from temporalio.client import Client

import webhooks.routes
from admin import api, console
from config import (
    Settings,
    connect_temporal,
    get_settings,
    require_production_secrets,
    secrets_to_mask,
)
from content.present import STATIC
from invitations.client import InvitationsClient
from linkhandler.hardening import SecurityHeaders
from observability import configure_logging
from records.db import engine_from, init_db


def create_admin_app(
    settings: Settings | None = None, client: Client | None = None, engine: Engine | None = None,
    *, search_attributes: bool = True,
) -> FastAPI:
    """The app factory (`uvicorn --factory`). Tests inject their settings, client and engine
    (`search_attributes=False` on the time-skipping server, which cannot hold ours)."""
    if settings is None:  # served for real: our log format, secrets masked
        settings = get_settings()
        require_production_secrets(settings, "the admin app")
        configure_logging(json_output=settings.log_json, secrets=secrets_to_mask(settings))
    cfg = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        eng = engine if engine is not None else engine_from(cfg)
        if own_engine:
            init_db(eng)
        temporal = client if client is not None else await connect_temporal(cfg)
        app.state.settings = cfg
        app.state.engine = eng
        app.state.temporal = temporal
        app.state.invitations = InvitationsClient(temporal, cfg, eng,
                                                  search_attributes=search_attributes)
        yield
        if own_engine:
            eng.dispose()

    app = FastAPI(title="Invitations admin", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json")
    app.add_middleware(SecurityHeaders, https=cfg.admin_base_url.lower().startswith("https://"))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Routers (issue #15): console pages at /, the REST API at /api/v1.
    app.include_router(webhooks.routes.router, prefix="/api/v1")
    app.include_router(console.router)
    app.include_router(api.router, prefix="/api/v1")
    return app
