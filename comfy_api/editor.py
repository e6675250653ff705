"""ComfyUI's own web editor (the comfyui-frontend-package from PyPI, pinned in pyproject.toml) at
/comfy/, to users logged in through the project (the admin's session; anyone else is sent to the
admin login). The editor reaches the front door under /comfy/api/ and /comfy/ws, as it reaches a
ComfyUI server it is served from.

The page is the package's index.html with one script added before the editor's own: the session's
CSRF token on the editor's unsafe requests (fetch and XMLHttpRequest to this origin), which the
session authentication requires and ComfyUI's frontend knows nothing of. Its files are served
from the package's `static` folder, read-only, with their content types; the hashed ones under
assets/ are cached for a year, the rest revalidated.
"""

from __future__ import annotations

import json
import mimetypes
from functools import cache
from pathlib import Path

import comfyui_frontend_package  # type: ignore[import-untyped]
from django.contrib.auth.views import redirect_to_login
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotModified
from django.middleware.csrf import get_token
from django.utils.http import http_date
from django.views.static import was_modified_since

STATIC_ROOT = Path(comfyui_frontend_package.__file__).resolve().parent / "static"
# The page's folders and files besides index.html (a ComfyUI server serves its whole web root).
STATIC_PATTERN = r"^(?P<name>(?:assets|extensions|scripts|fonts|cursor)/[\s\S]+|materialdesignicons\.min\.css)$"
HASHED_CACHE = "private, max-age=31536000, immutable"
OTHER_CACHE = "private, no-cache"
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".wasm": "application/wasm",
}
CSRF_SCRIPT = """<script>(function () {
  var token = %s, safe = /^(GET|HEAD|OPTIONS|TRACE)$/i;
  function ours(url) {
    try { return new URL(url, location.href).origin === location.origin; } catch (e) { return false; }
  }
  var fetch0 = window.fetch;
  window.fetch = function (input, init) {
    var request = input instanceof Request ? input : null;
    var method = (init && init.method) || (request && request.method) || "GET";
    if (!safe.test(method) && ours(request ? request.url : String(input))) {
      var headers = new Headers((init && init.headers) || (request && request.headers) || undefined);
      headers.set("X-CSRFToken", token);
      init = Object.assign({}, init || {}, {headers: headers});
    }
    return fetch0.call(this, input, init);
  };
  var open0 = XMLHttpRequest.prototype.open, send0 = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) {
    this.__csrf = !safe.test(method) && ours(url);
    return open0.apply(this, arguments);
  };
  XMLHttpRequest.prototype.send = function () {
    if (this.__csrf) this.setRequestHeader("X-CSRFToken", token);
    return send0.apply(this, arguments);
  };
})();</script>"""


@cache
def _index_html() -> str:
    return (STATIC_ROOT / "index.html").read_text(encoding="utf-8")


def editor_page(request: HttpRequest) -> HttpResponse:
    """/comfy/: the editor, to a logged-in user; the project's login (and back) for anyone else."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())  # settings.LOGIN_URL: for every active user
    page = _index_html()
    script = CSRF_SCRIPT % json.dumps(get_token(request))
    marker = '<script type="module"'
    page = (
        page.replace(marker, f"{script}{marker}", 1)
        if marker in page
        else page.replace("</head>", f"{script}</head>", 1)
    )
    response = HttpResponse(page, content_type="text/html; charset=utf-8")
    response["Cache-Control"] = "private, no-store"
    return response


def editor_user_css(request: HttpRequest) -> HttpResponse:
    """/comfy/user.css: the page links it; ComfyUI has none by default either."""
    if not request.user.is_authenticated:
        return HttpResponse(status=403)
    return HttpResponse("", content_type="text/css")


def editor_templates_index(request: HttpRequest) -> HttpResponse:
    """/comfy/templates/index.json: ComfyUI's example workflows (the comfyui-workflow-templates
    package) are not served; the editor shows an empty template list."""
    if not request.user.is_authenticated:
        return HttpResponse(status=403)
    return HttpResponse("[]", content_type="application/json")


def editor_static(request: HttpRequest, name: str) -> HttpResponseBase:
    """A file of the editor, to a logged-in user; nothing outside the package's static folder."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    if not request.user.is_authenticated:
        return HttpResponse("log in at /accounts/login/ first", status=403, content_type="text/plain")
    path = _static_file(name)
    if path is None:
        raise Http404("no such file of the editor")
    stat = path.stat()
    if not was_modified_since(request.META.get("HTTP_IF_MODIFIED_SINCE"), int(stat.st_mtime)):
        return HttpResponseNotModified()
    content_type = CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    response = FileResponse(path.open("rb"), content_type=content_type or "application/octet-stream")
    response["Last-Modified"] = http_date(stat.st_mtime)
    response["Cache-Control"] = HASHED_CACHE if name.startswith("assets/") else OTHER_CACHE
    return response


def _static_file(name: str) -> Path | None:
    if "\x00" in name or "\\" in name:
        return None
    path = (STATIC_ROOT / name).resolve()
    if not path.is_relative_to(STATIC_ROOT) or not path.is_file():
        return None
    return path
