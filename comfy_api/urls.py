"""ComfyUI's HTTP API under /comfy/ and /comfy/api/ (ComfyUI's own /api/ aliases), and its paths at
the site's root as well (anime_production/urls.py): several ComfyUI clients join "/prompt" onto their
base URL as an absolute path, dropping any prefix. The websocket (/ws) is comfy_api/routing.py's."""

from django.urls import include, path, re_path

from comfy_api import views_files, views_info, views_prompts
from comfy_api.urls_editor import editor_api_patterns, editor_page_patterns

# ComfyUI's paths the front door answers; at the root too.
endpoint_patterns = [
    path("prompt", views_prompts.PromptView.as_view()),
    path("queue", views_prompts.QueueView.as_view()),
    path("history", views_prompts.HistoryView.as_view()),
    path("history/<str:prompt_id>", views_prompts.HistoryItemView.as_view()),
    path("interrupt", views_prompts.InterruptView.as_view()),
    path("view", views_files.ViewFileView.as_view()),
    path("upload/image", views_files.UploadImageView.as_view()),
    path("upload/mask", views_files.UploadMaskView.as_view()),
    path("object_info", views_info.ObjectInfoView.as_view()),
    path("object_info/<str:node_class>", views_info.ObjectInfoClassView.as_view()),
    path("system_stats", views_info.SystemStatsView.as_view()),
    path("embeddings", views_info.EmbeddingsView.as_view()),
    path("models", views_info.ModelFoldersView.as_view()),
    path("models/<str:folder>", views_info.ModelFolderView.as_view()),
    path("features", views_info.FeaturesView.as_view()),
    path("extensions", views_info.ExtensionsView.as_view()),
    *editor_api_patterns,  # what the web editor asks besides running prompts: per user, by the project
]

# At the root, ComfyUI's other paths a client at the root may call answer 501 as under /comfy/ (the
# rest of the site keeps its own 404s).
UNSUPPORTED_AT_ROOT = r"^(?:free|internal|view_metadata|experiment)(?:/[\s\S]*)?$"
root_patterns = [*endpoint_patterns, re_path(UNSUPPORTED_AT_ROOT, views_info.NotSupportedView.as_view())]

# Under /comfy/ (and /comfy/api/) only: anything else ComfyUI has (/free, /userdata, /settings,
# /api/jobs, the web editor's page...) answers 501 with what is not supported.
urlpatterns = [
    path("api/", include(endpoint_patterns)),
    *endpoint_patterns,
    *editor_page_patterns,  # the web editor's page and files (login required)
    re_path(r"^[\s\S]*$", views_info.NotSupportedView.as_view()),  # [\s\S]: a newline (%0A) too
]
