"""The waiting order is read with sorting off (the dispatch index) inside `index_order_kept` only:
a transaction that goes on after the block sorts again; the take's own transaction, which ends with
the block, sends no statement to reset it."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from jobs import dispatch
from jobs.queue_order import index_order_kept
from tests.factories import JobFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL planner setting"),
]


def enable_sort() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_sort")
        return cursor.fetchone()[0]


def test_sorting_is_off_within_and_back_for_the_rest_of_the_caller_s_transaction():
    with transaction.atomic():
        with index_order_kept():
            assert enable_sort() == "off"
        assert enable_sort() == "on"
    with index_order_kept():
        assert enable_sort() == "off"
    assert enable_sort() == "on"


def test_a_take_does_not_reset_sorting_before_its_commit_and_the_next_transaction_sorts():
    job = JobFactory.create()

    with CaptureQueriesContext(connection) as queries:
        taken = dispatch.job_take_next("default")

    assert taken is not None and taken.pk == job.pk
    statements = [query["sql"] for query in queries.captured_queries]
    assert "SET LOCAL enable_sort = off" in statements
    assert not [sql for sql in statements if "enable_sort TO DEFAULT" in sql]
    with transaction.atomic():
        assert enable_sort() == "on"


def test_a_take_inside_a_caller_s_transaction_leaves_it_sorting():
    JobFactory.create()

    with transaction.atomic():
        assert dispatch.job_take_next("default") is not None
        assert enable_sort() == "on"
