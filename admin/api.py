"""The REST API, `/api/v1` (issue #15): invitations for services in any language."""

from __future__ import annotations

from fastapi import APIRouter

from admin.problems import ProblemRoute

router = APIRouter(route_class=ProblemRoute)
