"""/api/keys/: a user's own API keys. The whole key appears once, in the answer that creates it."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from access.keys import ApiKeyRefused, api_key_create, api_key_revoke
from access.models import ApiKey


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    days = serializers.IntegerField(required=False, min_value=1)


class ApiKeyViewSet(viewsets.ViewSet):
    """List, create and revoke the caller's own keys (another user's key is a 404)."""

    def list(self, request: Request) -> Response:
        keys = ApiKey.objects.filter(user_id=request.user.pk or 0)[: settings.API_KEYS_PER_USER * 5]
        return Response(ApiKeySerializer(keys, many=True).data)

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

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        record = ApiKey.objects.filter(user_id=request.user.pk or 0, pk=int(pk) if pk and pk.isdigit() else 0).first()
        if record is None:
            return Response({"detail": "no such key"}, status=status.HTTP_404_NOT_FOUND)
        api_key_revoke(record)
        return Response(status=status.HTTP_204_NO_CONTENT)
