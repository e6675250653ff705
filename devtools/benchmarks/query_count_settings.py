"""The project's settings plus a response header with each request's SQL query count, for
`dashboard_at_scale` only.

The count is taken in the process that ran the queries (daphne's), around the whole middleware
stack, so the benchmark can print it beside the time it measured over HTTP. Celery's broker is
in memory: a job posted by the benchmark is made and announced as usual, but no worker takes it.
"""

from collections.abc import Callable
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse

from anime_production.settings import *  # noqa: F403

QUERY_COUNT_HEADER = "X-Query-Count"


class QueryCountMiddleware:
    """Counts the statements this request sent to the database (outermost, so nothing is missed)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        count = 0

        def counted(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
            nonlocal count
            count += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(counted):
            response = self.get_response(request)
        response[QUERY_COUNT_HEADER] = str(count)
        return response


MIDDLEWARE = ["devtools.benchmarks.query_count_settings.QueryCountMiddleware", *MIDDLEWARE]  # noqa: F405
CELERY_BROKER_URL = "memory://"
