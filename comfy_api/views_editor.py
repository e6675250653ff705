"""What ComfyUI's web editor asks besides running prompts, answered per user by the project in
ComfyUI's shapes (app/user_manager.py, app/app_settings.py, app/model_manager.py): settings, the
single-user answer of /users, the files it saves (/userdata), and the empty lists of what the
fleet does not offer it (translations of custom nodes, their templates, global subgraphs).
Nothing here reaches a GPU machine except the model lists, which come from comfy_api.fleet_info.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from django.http import HttpResponse, JsonResponse
from rest_framework.parsers import BaseParser
from rest_framework.request import Request

from comfy_api.editor_files import (
    EditorFileExists,
    EditorFileRefused,
    editor_file_delete,
    editor_file_get,
    editor_file_info,
    editor_file_move,
    editor_file_save,
    editor_files_in,
    editor_folder_exists,
    editor_path_checked,
    editor_settings_get,
    editor_settings_update,
)
from comfy_api.endpoint import BodyRefused, FrontDoorView, json_body
from comfy_api.errors import refused
from comfy_api.fleet_info import fleet_model_folders, fleet_models

MOVE = "/move/"


class AnyBody(BaseParser):
    """The editor posts settings and files with any Content-Type (often text/plain); the views read
    the raw body themselves, so no parser refuses it (415) during the session's CSRF check."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> dict[str, Any]:
        return {}


class EditorView(FrontDoorView):
    parser_classes = [AnyBody]


def _flag(request: Request, name: str, default: bool) -> bool:
    """ComfyUI's query flags: overwrite is true unless "false"; full_info, recurse false unless "true"."""
    value = request.query_params.get(name)
    if value is None:
        return default
    return value.lower() != "false" if default else value.lower() == "true"


def _refusal(exc: EditorFileRefused) -> JsonResponse:
    if isinstance(exc, EditorFileExists):
        return refused(str(exc), status=409, kind="exists")
    return refused(str(exc))


class UsersView(EditorView):
    """ComfyUI's single-user answer: the editor uses the logged-in user and asks for no user name."""

    def get(self, request: Request) -> JsonResponse:
        return JsonResponse({"storage": "server", "migrated": True})

    def post(self, request: Request) -> JsonResponse:
        return refused("users are the project's accounts: ask an administrator", status=400)


class SettingsView(EditorView):
    def get(self, request: Request) -> JsonResponse:
        return JsonResponse(editor_settings_get(request.user))

    def post(self, request: Request) -> HttpResponse:
        try:
            changes = json_body(request, empty={})
            if not isinstance(changes, dict):
                raise BodyRefused("the settings must be a JSON object")
            editor_settings_update(request.user, changes)
        except (BodyRefused, EditorFileRefused) as exc:
            return refused(str(exc))
        return HttpResponse(status=200)


class SettingView(EditorView):
    def get(self, request: Request, setting_id: str) -> JsonResponse:
        return JsonResponse(editor_settings_get(request.user).get(setting_id), safe=False)

    def post(self, request: Request, setting_id: str) -> HttpResponse:
        try:
            editor_settings_update(request.user, {setting_id: json_body(request)})
        except (BodyRefused, EditorFileRefused) as exc:
            return refused(str(exc))
        return HttpResponse(status=200)


class UserDataListView(EditorView):
    """GET /userdata?dir=workflows&recurse=true&full_info=true&split=false."""

    def get(self, request: Request) -> JsonResponse:
        folder = request.query_params.get("dir", "")
        if not folder:
            return refused("no dir given")
        try:
            files = editor_files_in(request.user, folder, recurse=_flag(request, "recurse", False))
            if not files and not editor_folder_exists(request.user, folder):
                # ComfyUI answers 404 for a folder not made yet; the editor reads it as empty.
                return refused(f"{folder[:64]} does not exist", status=404, kind="not_found")
        except EditorFileRefused as exc:
            return _refusal(exc)
        prefix = f"{folder.strip('/')}/"
        if _flag(request, "full_info", False):
            return JsonResponse([editor_file_info(file, prefix) for file in files], safe=False)
        paths = [file.path[len(prefix) :] for file in files]
        if _flag(request, "split", True):
            return JsonResponse([[path, *path.split("/")] for path in paths], safe=False)
        return JsonResponse(paths, safe=False)


class UserDataListV2View(EditorView):
    """GET /v2/userdata?path=: one folder's files and folders."""

    def get(self, request: Request) -> JsonResponse:
        folder = request.query_params.get("path", "").strip("/")
        try:
            files = editor_files_in(request.user, folder, recurse=True)
        except EditorFileRefused as exc:
            return _refusal(exc)
        prefix = f"{folder}/" if folder else ""
        entries: dict[str, dict[str, Any]] = {}
        for file in files:
            name, _, rest = file.path[len(prefix) :].partition("/")
            if rest:
                entries.setdefault(name, {"name": name, "path": f"{prefix}{name}", "type": "directory"})
            else:
                entries[name] = {**editor_file_info(file), "name": name, "type": "file"}
        return JsonResponse(list(entries.values()), safe=False)


class UserDataFileView(EditorView):
    """GET/POST/DELETE /userdata/{path} and POST /userdata/{path}/move/{destination}. The path comes
    percent-encoded in one segment (workflows%2Fa.json); a server gives it decoded, so a move is told
    from a save by the raw path when the server keeps it (ASGI's raw_path), else by "/move/"."""

    def get(self, request: Request, path: str) -> HttpResponse:
        try:
            file = editor_file_get(request.user, path)
        except EditorFileRefused as exc:
            return _refusal(exc)
        if file is None:
            return refused(f"{path[:64]} does not exist", status=404, kind="not_found")
        content_type = "application/json" if path.endswith(".json") else "application/octet-stream"
        if path.endswith(".css"):
            content_type = "text/css"
        return HttpResponse(bytes(file.content), content_type=content_type)

    def post(self, request: Request, path: str) -> JsonResponse:
        overwrite = _flag(request, "overwrite", True)
        full_info = _flag(request, "full_info", False)
        try:
            move = _move_of(request, path)
            if move is not None:
                file = editor_file_move(request.user, *move, overwrite=overwrite)
                if file is None:
                    return refused(f"{move[0][:64]} does not exist", status=404, kind="not_found")
            else:
                file = editor_file_save(request.user, path, request._request.body, overwrite=overwrite)
        except EditorFileRefused as exc:
            return _refusal(exc)
        return JsonResponse(editor_file_info(file) if full_info else file.path, safe=False)

    def delete(self, request: Request, path: str) -> HttpResponse:
        try:
            deleted = editor_file_delete(request.user, path)
        except EditorFileRefused as exc:
            return _refusal(exc)
        if not deleted:
            return refused(f"{path[:64]} does not exist", status=404, kind="not_found")
        return HttpResponse(status=204)


def _move_of(request: Request, path: str) -> tuple[str, str] | None:
    """(source, destination) when this POST is ComfyUI's move, else None (a save)."""
    scope = getattr(request._request, "scope", None)
    raw = scope.get("raw_path") if isinstance(scope, dict) else None
    if isinstance(raw, bytes):
        tail = raw.decode("latin-1").split("/userdata/", 1)[-1].split("?", 1)[0]
        source, sep, destination = tail.partition(MOVE)
        if not sep or "/" in source or "/" in destination:
            return None
        return editor_path_checked(unquote(source)), editor_path_checked(unquote(destination))
    source, sep, destination = path.partition(MOVE)
    return (source, destination) if sep else None


class EmptyDictView(EditorView):
    """/i18n, /workflow_templates, /global_subgraphs: custom nodes' translations, templates and
    subgraphs, which the fleet does not serve to the editor."""

    def get(self, request: Request) -> JsonResponse:
        return JsonResponse({})


class ExperimentModelFoldersView(EditorView):
    """The editor's model library: the fleet's model folders (comfy_api.fleet_info)."""

    def get(self, request: Request) -> JsonResponse:
        return JsonResponse([{"name": folder, "folders": []} for folder in fleet_model_folders()], safe=False)


class ExperimentModelFolderView(EditorView):
    def get(self, request: Request, folder: str) -> JsonResponse:
        files = fleet_models(folder)
        if files is None:
            return refused(f"no model folder {folder[:64]!r} on the fleet", status=404, kind="not_found")
        return JsonResponse([{"name": name, "pathIndex": 0} for name in files], safe=False)
