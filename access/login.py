"""The project's login for every active user: artists use the ComfyUI editor at /comfy/ and are not
staff, and the admin's login admits staff only. The page is the admin's login page (the same look,
no second template to keep); after it the user goes where `next` says, on this site only."""

from __future__ import annotations

from django.contrib.auth.views import LoginView

SITE_NAME = "anime-production"


class StudioLoginView(LoginView):
    template_name = "admin/login.html"
    redirect_authenticated_user = True
    extra_context = {"site_header": SITE_NAME, "site_title": SITE_NAME, "title": "Log in"}
