from typing import Any

from channels.routing import URLRouter
from django.urls import path

from comfy_api.consumers import ComfyClientConsumer
from comfy_api.ws_auth import BasicKeyOrProjectAuth, OriginOfBrowsersChecked

# ComfyUI's clients open `<base>/ws` (its editor `<base>/api/ws` too); the base is /comfy/. At the site's
# root too, as the HTTP paths (comfy_api/urls.py): some clients join "/ws" onto the base as an absolute path.
websocket_urlpatterns = [
    path("comfy/ws", ComfyClientConsumer.as_asgi()),
    path("comfy/api/ws", ComfyClientConsumer.as_asgi()),
    path("ws", ComfyClientConsumer.as_asgi()),
    path("api/ws", ComfyClientConsumer.as_asgi()),
]
PREFIX = "/comfy/"
ROOT_PATHS = frozenset({"/ws", "/api/ws"})


class FrontDoorWebsockets:
    """The front door's sockets with ComfyUI clients' credentials and origins (comfy_api.ws_auth);
    every other websocket path goes to `others`, the project's own stack."""

    def __init__(self, others: Any) -> None:
        self.others = others
        self.front_door = OriginOfBrowsersChecked(BasicKeyOrProjectAuth(URLRouter(websocket_urlpatterns)))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        where = str(scope.get("path", ""))
        if where.startswith(PREFIX) or where in ROOT_PATHS:
            return await self.front_door(scope, receive, send)
        return await self.others(scope, receive, send)
