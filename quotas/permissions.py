"""Who may see every user's usage: staff who hold quotas.view_usage, the same rule in the admin page
and in GET /api/quotas/ (one's own usage, GET /api/quotas/me/, is every signed-in user's)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, AnonymousUser
from rest_framework.permissions import BasePermission

from quotas.models import VIEW_USAGE


def may_view_usage(user: AbstractUser | AnonymousUser) -> bool:
    return bool(user.is_active and getattr(user, "is_staff", False) and user.has_perm(VIEW_USAGE))


class ViewsUsage(BasePermission):
    message = "every user's usage is for staff with the permission to view usage"

    def has_permission(self, request: Any, view: Any) -> bool:
        return may_view_usage(request.user)
