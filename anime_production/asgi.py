import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")
# Django must be set up before the consumers (and their models) are imported.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from access.access_log import AccessLogMiddleware  # noqa: E402
from access.database_unavailable import DatabaseUnavailableWebsocket  # noqa: E402
from access.in_flight import ListRequestsInFlight  # noqa: E402
from access.request_threads import RequestThreads  # noqa: E402
from anime_production.collector import web_process_collector  # noqa: E402
from anime_production.lifespan import lifespan  # noqa: E402
from anime_production.warm_up import warm_up  # noqa: E402
from assets.uploads import daphne_form_parsing_off  # noqa: E402
from comfy_api.routing import FrontDoorWebsockets  # noqa: E402
from jobs.routing import websocket_urlpatterns  # noqa: E402
from jobs.ws_auth import TokenOrSessionAuthMiddleware  # noqa: E402

daphne_form_parsing_off()
warm_up()
web_process_collector()  # after the warm-up: what it made is frozen with the rest
# The access log is ours, without query strings (tickets): daphne's own runs off (access/access_log.py).
application = AccessLogMiddleware(
    ProtocolTypeRouter(
        {
            # One user's flood of list requests must not hold the process's one thread for sync views.
            # ...and then runs on one of the process's kept request threads (access/request_threads.py).
            "http": ListRequestsInFlight(RequestThreads(django_asgi_app, settings.WEB_SYNC_THREADS)),
            # A handshake that finds the database down is turned away as "try again later".
            "websocket": DatabaseUnavailableWebsocket(
                # The ComfyUI front door's sockets take ComfyUI clients' credentials (comfy_api.routing).
                FrontDoorWebsockets(
                    AllowedHostsOriginValidator(TokenOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns)))
                )
            ),
            # The process's start: history read ahead for its first submits (anime_production/lifespan.py).
            "lifespan": lifespan,
        }
    )
)
