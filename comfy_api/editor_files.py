"""The web editor's per-user state, kept by the project (never on a GPU machine): its settings
(ComfyUI's comfy.settings.json) and the files it saves in the user's folder (/userdata: saved
workflows under workflows/, templates, keybindings...). Every name, size and count is bounded.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError, transaction

from comfy_api.models import EDITOR_PATH_MAX_CHARS, EditorFile, EditorSettings

EDITOR_FILE_MAX_BYTES = 4 * 1024 * 1024
EDITOR_FILES_MAX_PER_USER = 2000
EDITOR_PATH_MAX_DEPTH = 8
EDITOR_SETTINGS_MAX_BYTES = 256 * 1024
EDITOR_SETTING_ID_MAX_CHARS = 255


class EditorFileRefused(ValueError):
    """A name, size or count the project does not accept; the message says why (HTTP 400)."""


class EditorFileExists(EditorFileRefused):
    """The destination exists and overwrite was not asked for (ComfyUI's 409)."""


def editor_path_checked(path: str) -> str:
    """`path` as stored (relative, "/"-separated), or EditorFileRefused: no traversal, no absolute
    path, no control characters, bounded length and depth."""
    if not isinstance(path, str) or not path:
        raise EditorFileRefused("no file path given")
    if len(path) > EDITOR_PATH_MAX_CHARS:
        raise EditorFileRefused(f"the path is longer than {EDITOR_PATH_MAX_CHARS} characters")
    if any(ord(char) < 32 or char in '\\:*?"<>|\x7f' for char in path):
        raise EditorFileRefused("the path has a character that is not allowed in a file name")
    if path.startswith("/"):
        raise EditorFileRefused("the path must be relative to your folder")
    parts = path.split("/")
    if len(parts) > EDITOR_PATH_MAX_DEPTH:
        raise EditorFileRefused(f"the path is deeper than {EDITOR_PATH_MAX_DEPTH} folders")
    for part in parts:
        if part in ("", ".", "..") or part != part.strip():
            raise EditorFileRefused(f"the path has an unacceptable part {part!r}")
    return path


def editor_file_info(file: EditorFile, relative_to: str = "") -> dict[str, Any]:
    """ComfyUI's file info: path relative to the listed folder, size, modified (seconds, as mtime)."""
    return {
        "path": file.path[len(relative_to) :],
        "size": file.size,
        "modified": file.modified_at.timestamp(),
        "created": file.created_at.timestamp(),
    }


def editor_files_in(user: Any, folder: str, *, recurse: bool) -> list[EditorFile]:
    """The user's files under `folder` ("" = all), directly in it unless `recurse`."""
    prefix = f"{editor_path_checked(folder.strip('/'))}/" if folder.strip("/") else ""
    files = EditorFile.objects.filter(user=user, path__startswith=prefix).defer("content")
    return [file for file in files if recurse or "/" not in file.path[len(prefix) :]]


def editor_folder_exists(user: Any, folder: str) -> bool:
    prefix = f"{editor_path_checked(folder.strip('/'))}/"
    return EditorFile.objects.filter(user=user, path__startswith=prefix).exists()


def editor_file_get(user: Any, path: str) -> EditorFile | None:
    return EditorFile.objects.filter(user=user, path=editor_path_checked(path)).first()


def _clashes_with_folder(user: Any, path: str) -> bool:
    """A file may not take the name of a folder, nor sit below a file (as on a disk)."""
    parents = ["/".join(path.split("/")[:depth]) for depth in range(1, path.count("/") + 1)]
    return (
        EditorFile.objects.filter(user=user, path__startswith=f"{path}/").exists()
        or EditorFile.objects.filter(user=user, path__in=parents).exists()
    )


@transaction.atomic
def editor_file_save(user: Any, path: str, content: bytes, *, overwrite: bool) -> EditorFile:
    path = editor_path_checked(path)
    if len(content) > EDITOR_FILE_MAX_BYTES:
        raise EditorFileRefused(f"the file is larger than {EDITOR_FILE_MAX_BYTES} bytes")
    existing = EditorFile.objects.select_for_update().filter(user=user, path=path).first()
    if existing is not None:
        if not overwrite:
            raise EditorFileExists(f"{path} already exists")
        existing.content = content
        existing.size = len(content)
        existing.save(update_fields=["content", "size", "modified_at"])
        return existing
    if _clashes_with_folder(user, path):
        raise EditorFileRefused(f"{path} clashes with a folder or file of that name")
    if EditorFile.objects.filter(user=user).count() >= EDITOR_FILES_MAX_PER_USER:
        raise EditorFileRefused(f"you have {EDITOR_FILES_MAX_PER_USER} files already; delete some first")
    try:
        with transaction.atomic():
            return EditorFile.objects.create(user=user, path=path, content=content, size=len(content))
    except IntegrityError as exc:  # saved at the same moment by another request
        raise EditorFileExists(f"{path} already exists") from exc


@transaction.atomic
def editor_file_move(user: Any, source: str, destination: str, *, overwrite: bool) -> EditorFile | None:
    """Rename a file; None when the source does not exist."""
    source, destination = editor_path_checked(source), editor_path_checked(destination)
    file = EditorFile.objects.select_for_update().filter(user=user, path=source).first()
    if file is None:
        return None
    if source == destination:
        return file
    taken = EditorFile.objects.select_for_update().filter(user=user, path=destination).first()
    if taken is not None:
        if not overwrite:
            raise EditorFileExists(f"{destination} already exists")
        taken.delete()
    elif _clashes_with_folder(user, destination):
        raise EditorFileRefused(f"{destination} clashes with a folder or file of that name")
    file.path = destination
    file.save(update_fields=["path", "modified_at"])
    return file


def editor_file_delete(user: Any, path: str) -> bool:
    deleted, _ = EditorFile.objects.filter(user=user, path=editor_path_checked(path)).delete()
    return deleted > 0


def editor_settings_get(user: Any) -> dict[str, Any]:
    row = EditorSettings.objects.filter(user=user).first()
    return dict(row.values) if row is not None else {}


@transaction.atomic
def editor_settings_update(user: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge `changes` into the user's settings (POST /settings, POST /settings/{id})."""
    too_long = [key for key in changes if len(key) > EDITOR_SETTING_ID_MAX_CHARS]
    if too_long:
        raise EditorFileRefused(f"a setting id is longer than {EDITOR_SETTING_ID_MAX_CHARS} characters")
    if any(not key.isprintable() for key in changes):
        raise EditorFileRefused("a setting id holds a control character")
    row, _ = EditorSettings.objects.select_for_update().get_or_create(user=user)
    values = {**row.values, **changes}
    stored = json.dumps(values)
    if len(stored) > EDITOR_SETTINGS_MAX_BYTES:
        raise EditorFileRefused(f"the settings would be larger than {EDITOR_SETTINGS_MAX_BYTES} bytes")
    if "\\u0000" in stored:  # PostgreSQL's jsonb cannot hold a NUL character, in a key or a value
        raise EditorFileRefused("a setting holds a NUL character")
    row.values = values
    row.save(update_fields=["values", "updated_at"])
    return values
