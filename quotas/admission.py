"""The one check every way of making jobs passes: jobs.services.job_create calls `submit_check` for each
job, and the batch makers (a template batch, a pipeline) check their N jobs at once with
`batch_admitted`, inside which job_create's own checks are already counted.

Over a limit: QuotaExceeded (HTTP 429 with the reason; Retry-After for the daily GPU budget), raised
before anything is written, so the caller's transaction makes nothing. With QUOTA_OVER_LIMIT=wait it
never raises: the job is accepted and waits (quotas.limits.users_at_running_limit holds a user over the
daily budget back at dispatch until 00:00 UTC). The running-jobs limit is never checked here: a job over
it simply waits its turn at dispatch.

Two queries at most (the user's own limits; their usage when a limit applies), whatever the batch size.
Two requests racing may each pass with the same count: a limit can be passed by one request's jobs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import APIException

from quotas.limits import user_limits
from quotas.usage import seconds_to_next_utc_day, user_usage

# (user id, how many more jobs of the batch were counted already)
_admitted: ContextVar[tuple[int, int] | None] = ContextVar("quotas_admitted", default=None)


class QuotaExceeded(APIException):
    """429 with a body that says which limit, how much is used and what the request asked for."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "over your quota"
    default_code = "quota_exceeded"

    def __init__(self, *, reason: str, quota: str, limit: int, used: int, requested: int, retry_after: int | None):
        super().__init__(reason, self.default_code)
        self.reason = reason
        # DRF's exception handler sends Retry-After from `wait`, and `detail` (a dict) as the body.
        self.wait = retry_after
        self.body: dict[str, Any] = {
            "detail": reason,
            "quota": quota,
            "limit": limit,
            "used": used,
            "requested": requested,
        }
        if retry_after is not None:
            self.body["retry_after"] = retry_after
        self.detail = self.body

    def __str__(self) -> str:
        return self.reason


def submit_check(user: Any, count: int = 1) -> None:
    """Raise QuotaExceeded when `count` more jobs of `user` would pass a limit; nothing otherwise."""
    user_id = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
    if user_id is None or settings.QUOTA_OVER_LIMIT == "wait":
        return
    admitted = _admitted.get()
    if admitted is not None and admitted[0] == user_id and admitted[1] >= count:
        _admitted.set((user_id, admitted[1] - count))
        return
    limits = user_limits(user_id)
    if limits.max_waiting_jobs is None and limits.gpu_seconds_per_day is None:
        return
    now = timezone.now()
    usage = user_usage(user_id, now=now)
    if limits.gpu_seconds_per_day is not None and usage.gpu_seconds_today >= limits.gpu_seconds_per_day:
        raise QuotaExceeded(
            reason=f"you used {usage.gpu_seconds_today} of your {limits.gpu_seconds_per_day} GPU-seconds today "
            "(UTC day); the budget starts again at 00:00 UTC",
            quota="gpu_seconds_per_day",
            limit=limits.gpu_seconds_per_day,
            used=usage.gpu_seconds_today,
            requested=count,
            retry_after=seconds_to_next_utc_day(now),
        )
    if limits.max_waiting_jobs is not None and usage.waiting + count > limits.max_waiting_jobs:
        raise QuotaExceeded(
            reason=f"you have {usage.waiting} jobs waiting and may have {limits.max_waiting_jobs}; "
            f"this request adds {count}",
            quota="max_waiting_jobs",
            limit=limits.max_waiting_jobs,
            used=usage.waiting,
            requested=count,
            retry_after=None,  # when depends on the GPUs: retry after some of them have started
        )


@contextmanager
def batch_admitted(user: Any, count: int) -> Iterator[None]:
    """Check `count` jobs of `user` at once; the job_create calls inside count against this check."""
    submit_check(user, count)
    user_id = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
    token = _admitted.set((user_id, count) if user_id is not None else None)
    try:
        yield
    finally:
        _admitted.reset(token)
