"""What the fleet can run, in ComfyUI's shapes (comfy_api.fleet_info), and the front door's features."""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from rest_framework.request import Request

from comfy_api.endpoint import FrontDoorView
from comfy_api.errors import not_supported, refused
from comfy_api.fleet_info import (
    fleet_embeddings,
    fleet_model_folders,
    fleet_models,
    fleet_object_info,
    fleet_system_stats,
)


class ObjectInfoView(FrontDoorView):
    def get(self, request: Request) -> JsonResponse:
        return JsonResponse(fleet_object_info())


class ObjectInfoClassView(FrontDoorView):
    def get(self, request: Request, node_class: str) -> JsonResponse:
        info = fleet_object_info()
        return JsonResponse({node_class: info[node_class]} if node_class in info else {})


class SystemStatsView(FrontDoorView):
    def get(self, request: Request) -> JsonResponse:
        return JsonResponse(fleet_system_stats())


class EmbeddingsView(FrontDoorView):
    def get(self, request: Request) -> JsonResponse:
        return JsonResponse(fleet_embeddings(), safe=False)


class ModelFoldersView(FrontDoorView):
    def get(self, request: Request) -> JsonResponse:
        return JsonResponse(fleet_model_folders(), safe=False)


class ModelFolderView(FrontDoorView):
    def get(self, request: Request, folder: str) -> JsonResponse:
        files = fleet_models(folder)
        if files is None:
            return refused(f"no model folder {folder[:64]!r} on the fleet", status=404, kind="not_found")
        return JsonResponse(files, safe=False)


class FeaturesView(FrontDoorView):
    def get(self, request: Request) -> JsonResponse:
        return JsonResponse({"supports_preview_metadata": True, "max_upload_size": settings.ASSET_MAX_BYTES})


class ExtensionsView(FrontDoorView):
    """No ComfyUI web extensions are served: the fleet's custom nodes run, their scripts do not."""

    def get(self, request: Request) -> JsonResponse:
        return JsonResponse([], safe=False)


class NotSupportedView(FrontDoorView):
    """Whatever else ComfyUI answers: a clear 501, never a wrong answer."""

    def answer(self, request: Request, *args: object, **kwargs: object) -> JsonResponse:
        return not_supported(f"{request.method} {request.path}")

    get = post = put = patch = delete = answer
