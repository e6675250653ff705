"""`/api/assets/`: upload, list, show, download (inert) and delete a user's input files."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet
from django.http.response import HttpResponseBase
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from access.openapi import DetailSerializer, file_responses
from access.pagination import NewestFirstPagination
from assets import selectors, services
from assets.intake import AssetRefused
from assets.models import Asset
from assets.serializers import AssetSerializer, AssetUploadSerializer
from assets.serving import SERVED_MEDIA_TYPES, stored_file_response
from assets.uploads import declared_too_large, limit_uploads


class AssetInUseSerializer(DetailSerializer):
    jobs = serializers.ListField(child=serializers.UUIDField(), help_text="the waiting or running jobs that use it")


class AssetViewSet(viewsets.GenericViewSet):
    serializer_class = AssetSerializer
    pagination_class = NewestFirstPagination
    filterset_fields = ["kind", "media_type"]

    def get_queryset(self) -> QuerySet[Asset]:
        return selectors.visible_assets(self.request.user)

    @property
    def throttle_scope(self) -> str | None:
        """Uploads have a rate of their own: each one is stored and hashed whole."""
        return "upload" if getattr(self, "action", None) == "create" else None

    def list(self, request: Request) -> Response:
        assets = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(assets)
        return self.get_paginated_response(AssetSerializer(assets if page is None else page, many=True).data)

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(AssetSerializer(self.get_object()).data)

    @extend_schema(
        request={"multipart/form-data": AssetUploadSerializer},
        responses={
            201: OpenApiResponse(AssetSerializer, description="a new asset"),
            200: OpenApiResponse(AssetSerializer, description="you uploaded these bytes before: that asset"),
        },
        description="400 (on `file`) when the bytes are not a supported image, video or audio file, or the "
        "file is empty, too big, has too many pixels, frames or seconds, a header that cannot be read, or "
        "passes your quota.",
    )
    def create(self, request: Request) -> Response:
        """201 with a new asset; 200 with the one the user already has with the same bytes."""
        limit = settings.ASSET_MAX_BYTES
        if declared_too_large(request._request, limit):
            return _refused(f"the upload is larger than the limit of {limit} bytes")
        size_limit = limit_uploads(request._request, limit)
        incoming = AssetUploadSerializer(data=request.data)
        if size_limit.exceeded:
            return _refused(f"the file is larger than the limit of {limit} bytes")
        incoming.is_valid(raise_exception=True)
        try:
            asset, created = services.asset_create(
                owner=request.user,
                upload=incoming.validated_data["file"],
                name=incoming.validated_data.get("name", ""),
            )
        except AssetRefused as exc:
            return _refused(str(exc))
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(AssetSerializer(asset).data, status=code)

    @extend_schema(
        responses={
            204: None,
            403: OpenApiResponse(DetailSerializer, description="staff who may see it but not delete it"),
            409: OpenApiResponse(AssetInUseSerializer, description="a waiting or running job uses it"),
        }
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """204; 409 while a waiting or running job uses the asset."""
        asset = self.get_object()
        if not selectors.may_delete_asset(request.user, asset):
            return Response(
                {"detail": "only its owner, or staff with the permission to delete assets, may delete it"},
                status=status.HTTP_403_FORBIDDEN,
            )
        try:
            services.asset_delete(asset)
        except services.AssetInUse as exc:
            return Response(
                {
                    "detail": f"the asset is {exc}; delete it when they have ended (or cancel them)",
                    "jobs": [str(job_id) for job_id in exc.job_ids],
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=file_responses(SERVED_MEDIA_TYPES, "the file, served inert"))
    @action(detail=True, methods=["get"])
    def content(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """The file, served inert (assets.serving) whatever it turns out to be."""
        asset = self.get_object()
        return stored_file_response(request, asset.file, name=asset.name, default_stem="asset", what="asset's file")


def _refused(reason: str) -> Response:
    return Response({"file": [reason]}, status=status.HTTP_400_BAD_REQUEST)
