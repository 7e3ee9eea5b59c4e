"""The aiohttp `AppKey`s of the controller's application, declared in one place.

All runtime state lives in one `Services` object (controller.services) behind `SERVICES`:
a handler reads `request.app[SERVICES].live`, never a loose key per service.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # services.py imports nearly every area; the key needs its type only for checkers
    from controller.http.endpoint import Endpoint
    from controller.services import Services

SERVICES: web.AppKey[Services] = web.AppKey("services")
ENDPOINTS: web.AppKey[dict[web.AbstractRoute, Endpoint]] = web.AppKey("endpoints")  # route -> its declaration
