"""`/api/webhooks/`: a user's subscriptions (CRUD), their secrets (shown once, rotatable), their deliveries."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from access.pagination import NewestFirstPagination
from webhooks import selectors, services
from webhooks.models import Webhook
from webhooks.serializers import WebhookDeliverySerializer, WebhookSerializer


class NewWebhookSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="signs every message: shown in this answer only")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class NewSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="shown in this answer only")
    previous_secret_valid_until = serializers.DateTimeField(
        allow_null=True, help_text="the old one signs too until then"
    )


class TestMessageSerializer(serializers.Serializer):
    message_id = serializers.CharField(help_text="find its delivery by it in the deliveries")


class WebhookViewSet(viewsets.GenericViewSet):
    """Only the owner's own subscriptions exist here (another user's is a 404); staff see all in the admin."""

    serializer_class = WebhookSerializer
    pagination_class = NewestFirstPagination

    def get_queryset(self) -> QuerySet[Webhook]:
        return selectors.user_subscriptions(self.request.user)

    def list(self, request: Request) -> Response:
        webhooks = self.get_queryset()
        page = self.paginate_queryset(webhooks)
        return self.get_paginated_response(WebhookSerializer(webhooks if page is None else page, many=True).data)

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(WebhookSerializer(self.get_object()).data)

    @extend_schema(responses={201: NewWebhookSerializer})
    def create(self, request: Request) -> Response:
        """201 with the webhook and its secret: the only answer that shows it."""
        incoming = WebhookSerializer(data=request.data, context={"user": request.user})
        incoming.is_valid(raise_exception=True)
        try:
            webhook = services.webhook_create(owner=request.user, **incoming.validated_data)
        except services.WebhookRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response({**WebhookSerializer(webhook).data, "secret": webhook.secret}, status=status.HTTP_201_CREATED)

    def update(self, request: Request, pk: str | None = None, partial: bool = False) -> Response:
        webhook = self.get_object()
        incoming = WebhookSerializer(webhook, data=request.data, partial=partial, context={"user": request.user})
        incoming.is_valid(raise_exception=True)
        return Response(WebhookSerializer(services.webhook_update(webhook, **incoming.validated_data)).data)

    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        return self.update(request, pk, partial=True)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        self.get_object().delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=NewSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        """A new secret, shown in this answer only; the old one signs alongside it for a grace period."""
        webhook = services.webhook_secret_rotate(self.get_object())
        return Response(
            {"secret": webhook.secret, "previous_secret_valid_until": webhook.previous_secret_until},
            status=status.HTTP_200_OK,
        )

    @extend_schema(responses=WebhookDeliverySerializer(many=True))
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        """Every attempt, newest first, with the receiver's status code, duration and error."""
        deliveries = selectors.webhook_deliveries(self.get_object())
        page = self.paginate_queryset(deliveries)
        shown = deliveries if page is None else page
        return self.get_paginated_response(WebhookDeliverySerializer(shown, many=True).data)

    @extend_schema(request=None, responses={202: TestMessageSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Send a `webhook.test` message now (202); its delivery shows in the deliveries."""
        message = services.webhook_test_send(self.get_object())
        return Response({"message_id": message.message_id}, status=status.HTTP_202_ACCEPTED)
