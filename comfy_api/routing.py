from django.urls import path

from comfy_api.consumers import ComfyClientConsumer

# ComfyUI's clients open `<base>/ws` (its editor `<base>/api/ws` too); the base is /comfy/.
websocket_urlpatterns = [
    path("comfy/ws", ComfyClientConsumer.as_asgi()),
    path("comfy/api/ws", ComfyClientConsumer.as_asgi()),
]
