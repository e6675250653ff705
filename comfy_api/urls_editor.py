"""The web editor's paths (comfy_api.editor, comfy_api.views_editor), added to comfy_api/urls.py:
`editor_api_patterns` beside ComfyUI's other endpoints (under /comfy/, /comfy/api/ and the root),
`editor_page_patterns` under /comfy/ only (the page and its files)."""

from django.urls import path, re_path

from comfy_api import editor, views_editor

editor_api_patterns = [
    path("users", views_editor.UsersView.as_view()),
    path("settings", views_editor.SettingsView.as_view()),
    path("settings/<str:setting_id>", views_editor.SettingView.as_view()),
    path("userdata", views_editor.UserDataListView.as_view()),
    path("v2/userdata", views_editor.UserDataListV2View.as_view()),
    path("userdata/<path:path>", views_editor.UserDataFileView.as_view()),
    path("i18n", views_editor.EmptyDictView.as_view()),
    path("workflow_templates", views_editor.EmptyDictView.as_view()),
    path("global_subgraphs", views_editor.EmptyDictView.as_view()),
    path("experiment/models", views_editor.ExperimentModelFoldersView.as_view()),
    path("experiment/models/<str:folder>", views_editor.ExperimentModelFolderView.as_view()),
]

editor_page_patterns = [
    path("", editor.editor_page, name="comfy-editor"),
    path("user.css", editor.editor_user_css),
    path("templates/index.json", editor.editor_templates_index),
    re_path(editor.STATIC_PATTERN, editor.editor_static),
]
