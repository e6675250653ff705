"""Who may see fleet-wide data: staff who hold the permission, the same rule in the admin and in REST.

Every job's numbers are fleet-wide (other users' work, every backend): a logged-in artist sees only
their own jobs through /api/jobs/, never the statistics.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, AnonymousUser
from rest_framework.permissions import BasePermission

VIEW_FLEET = "jobs.view_job"
VIEW_BACKENDS = "fleet.view_backend"
DRAIN_BACKENDS = "fleet.change_backend"


def may_view_fleet(user: AbstractUser | AnonymousUser) -> bool:
    return bool(user.is_active and getattr(user, "is_staff", False) and user.has_perm(VIEW_FLEET))


def may_view_backends(user: AbstractUser | AnonymousUser) -> bool:
    return bool(user.is_active and getattr(user, "is_staff", False) and user.has_perm(VIEW_BACKENDS))


class ViewsFleet(BasePermission):
    message = "fleet-wide statistics are for staff with the permission to view jobs"

    def has_permission(self, request: Any, view: Any) -> bool:
        return may_view_fleet(request.user)
