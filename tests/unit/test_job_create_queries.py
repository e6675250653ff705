"""`POST /api/jobs/` runs a bounded number of queries, whatever the queue and the history hold
(issue 12: at most 20; it was ~116 when every waiting job was re-sent its state)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import SLEEP_WORKFLOW, JobFactory

pytestmark = pytest.mark.django_db

POST_QUERIES_MAX = 20


@pytest.mark.parametrize("waiting", [0, 60])
def test_a_submit_runs_at_most_20_queries(api, user, waiting, django_capture_on_commit_callbacks):
    JobFactory.create_batch(waiting, user=user)
    body = {"workflow": SLEEP_WORKFLOW, "job_type": "image", "priority": 5, "tags": ["a", "b"]}
    api.post("/api/jobs/", body, format="json")  # the first learns the ETA from history
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/jobs/", body, format="json")
    assert response.status_code == 201, response.content
    assert len(queries) <= POST_QUERIES_MAX, "\n".join(q["sql"][:200] for q in queries.captured_queries)
