from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST

from metrics.access import Refusal, metrics_refusal
from metrics.exposition import metrics_text


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format, for a scraper with the token or on an allowed network (metrics.access)."""
    refusal = metrics_refusal(request)
    if refusal is Refusal.NOT_CONFIGURED:
        return HttpResponse("Not found\n", status=404, content_type="text/plain")
    if refusal is Refusal.NETWORK:
        return HttpResponse("Forbidden: not from an allowed network\n", status=403, content_type="text/plain")
    if refusal is Refusal.TOKEN:
        response = HttpResponse("Unauthorized: a bearer token is required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
