"""/api/keys/: a user's own API keys. The whole key appears once, in the answer that creates it.
/api/ws-tickets/: single-use tickets that open a websocket without a key in its URL."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.keys import ApiKeyRefused, api_key_create, api_key_revoke
from access.models import ApiKey
from access.openapi import DetailSerializer
from access.parsers import SingleValuedFields
from access.ws_tickets import ws_ticket_issue


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreateSerializer(SingleValuedFields):
    name = serializers.CharField(max_length=100)
    days = serializers.IntegerField(required=False, min_value=1, help_text="lifetime; API_KEY_DAYS when left out")


class NewApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="the whole key: shown in this answer only")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


KEY_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="the key's id")


class ApiKeyViewSet(viewsets.ViewSet):
    """List, create and revoke the caller's own keys (another user's key is a 404)."""

    @extend_schema(responses=ApiKeySerializer(many=True), summary="Your API keys, live and revoked")
    def list(self, request: Request) -> Response:
        keys = ApiKey.objects.filter(user_id=request.user.pk or 0)[: settings.API_KEYS_PER_USER * 5]
        return Response(ApiKeySerializer(keys, many=True).data)

    @extend_schema(
        request=ApiKeyCreateSerializer,
        responses={201: NewApiKeySerializer},
        summary="Make a key (the whole key is in this answer only)",
        description="400 when the name is taken by a live key, the lifetime is out of bounds, or you "
        "hold API_KEYS_PER_USER live keys already.",
    )
    def create(self, request: Request) -> Response:
        body = ApiKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            new = api_key_create(
                user=request.user, name=body.validated_data["name"], days=body.validated_data.get("days")
            )
        except ApiKeyRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response({**ApiKeySerializer(new.record).data, "key": new.key}, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[KEY_ID],
        responses={204: None, 404: OpenApiResponse(DetailSerializer, description="no key of yours with that id")},
        summary="Revoke a key",
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        record = ApiKey.objects.filter(user_id=request.user.pk or 0, pk=int(pk) if pk and pk.isdigit() else 0).first()
        if record is None:
            return Response({"detail": "no such key"}, status=status.HTTP_404_NOT_FOUND)
        api_key_revoke(record)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WsTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="open the websocket with `?ticket=<ticket>`, once")
    expires_at = serializers.DateTimeField(help_text="unused by then, the ticket is refused")
    expires_in = serializers.IntegerField(help_text="seconds from now: WS_TICKET_SECONDS")


class WsTicketView(APIView):
    """A websocket ticket for the signed-in user (session or API key)."""

    @extend_schema(
        request=None,
        responses={201: WsTicketSerializer},
        summary="A single-use, short-lived websocket ticket",
        description="For `ws/jobs/{id}/?ticket=<ticket>` or `ws/jobs/?ticket=<ticket>`: it opens one "
        "connection as you, within `expires_in` seconds. A second use, or a late one, closes the "
        "handshake (4401). Where a client can set headers, send the API key in a header instead.",
    )
    def post(self, request: Request) -> Response:
        issued = ws_ticket_issue(user=request.user)
        body = {"ticket": issued.ticket, "expires_at": issued.expires_at, "expires_in": settings.WS_TICKET_SECONDS}
        return Response(WsTicketSerializer(body).data, status=status.HTTP_201_CREATED)


@csrf_exempt  # nothing to protect, and a refused CSRF check would answer an HTML 403 instead
def api_not_found(request: HttpRequest, *args: object, **kwargs: object) -> JsonResponse:
    """Any other URL under /api/: a JSON 404 like every other answer of the API, not an HTML page."""
    return JsonResponse({"detail": "no such endpoint; the API is described at /api/docs/"}, status=404)
