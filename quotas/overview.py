"""Every user's usage beside their limits, for the admin's "Usage per user" page and GET /api/quotas/.

Four queries whatever the number of users: the closed days of the last 7 that are rolled up, their
GPU-seconds per user (quotas.rollups), the live usage of everyone with jobs waiting, running or
finished since (quotas.usage), and every UserQuota row with its user's name. The rows are sorted and
cut into pages in memory: there is one row per active user, not per job."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from quotas.limits import LIMIT_FIELDS, Limits, default_limits, limits_from
from quotas.models import UserQuota
from quotas.rollups import week_rolled_up
from quotas.usage import Usage, usage_by_user, user_usage


@dataclass(frozen=True)
class UserUsage:
    user_id: int
    username: str
    usage: Usage
    limits: Limits
    own_limits: bool

    @property
    def used_fractions(self) -> dict[str, float]:
        """How much of each limit is used (1.0 = at it); limits that are not set are left out."""
        used = {
            "max_running_jobs": self.usage.running,
            "max_waiting_jobs": self.usage.waiting,
            "gpu_seconds_per_day": self.usage.gpu_seconds_today,
        }
        return {name: used[name] / limit for name in LIMIT_FIELDS if (limit := getattr(self.limits, name))}

    @property
    def closeness(self) -> float | None:
        """The largest share of a limit used, None without limits."""
        return max(self.used_fractions.values(), default=None)


# ?o= on the page and ?ordering= in REST: a leading "-" sorts high first.
SORT_KEYS = {
    "username": lambda row: row.username.lower(),
    "running": lambda row: row.usage.running,
    "waiting": lambda row: row.usage.waiting,
    "gpu_today": lambda row: row.usage.gpu_seconds_today,
    "gpu_week": lambda row: row.usage.gpu_seconds_week,
    "closeness": lambda row: row.closeness if row.closeness is not None else -1.0,
}
DEFAULT_SORT = "-closeness"


def sort_choice(value: str | None) -> str:
    """The sort asked for when it is one of SORT_KEYS (with or without "-"), else the default."""
    if value and value.lstrip("-") in SORT_KEYS:
        return value
    return DEFAULT_SORT


def usage_overview(*, now: datetime, sort: str = DEFAULT_SORT) -> list[UserUsage]:
    live_since, rolled = week_rolled_up(now)
    live = usage_by_user(now=now, since=live_since)
    used = {
        user_id: (
            (live.get(user_id) or rolled[user_id])[0],
            replace(
                live[user_id][1] if user_id in live else Usage(),
                gpu_seconds_week=(live[user_id][1].gpu_seconds_week if user_id in live else 0)
                + (rolled[user_id][1] if user_id in rolled else 0),
            ),
        )
        for user_id in live.keys() | rolled.keys()
    }
    quotas = {
        row["user_id"]: row for row in UserQuota.objects.values("user_id", "user__username", "unlimited", *LIMIT_FIELDS)
    }
    defaults = default_limits()
    rows = [
        UserUsage(
            user_id=user_id,
            username=used[user_id][0] if user_id in used else quotas[user_id]["user__username"],
            usage=used[user_id][1] if user_id in used else Usage(),
            limits=limits_from(quotas.get(user_id), defaults),
            own_limits=user_id in quotas,
        )
        for user_id in used.keys() | quotas.keys()
    ]
    sort = sort_choice(sort)
    key = SORT_KEYS[sort.lstrip("-")]
    # Ties in name order, whichever way the column sorts.
    rows.sort(key=lambda row: row.username.lower())
    rows.sort(key=key, reverse=sort.startswith("-"))
    return rows


def user_week_usage(user_id: int, *, now: datetime) -> Usage:
    """One user's usage with the 7-day GPU-seconds: three queries (four the first time on a new day)."""
    live_since, rolled = week_rolled_up(now, user_id=user_id)
    return user_usage(user_id, now=now, since=live_since, rolled_up=rolled.get(user_id, ("", 0))[1])
