"""The job row's frequent writes, each one statement: `UPDATE jobs_job ... RETURNING`.

A tracker saves progress every 0.6 s and moves its job's status three times. Through the ORM each
was a transaction of four round trips (BEGIN, the UPDATE, a SELECT of the new seq, COMMIT) and the
progress save 1.4-1.7 ms of CPU, and the watchdog read the job's status and cancel flag again on
its own (0.3-0.4 ms): ~15 % of a tracker's CPU at ComfyUI's rate (in-process on PostgreSQL,
devtools/benchmarks/tracker_cpu.py). Here a statement is built once per database, set of columns
and condition from the model's own fields, the values are prepared by those fields
(Field.get_db_prep_save, as QuerySet.update does), and the same round trip returns the new seq and
whether a cancel was asked for. PostgreSQL and SQLite (3.35 and later) both know RETURNING.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Field

from jobs.models import Job


@dataclass(frozen=True)
class RowUpdated:
    """What the write found: the job's timeline seq after it, and whether a cancel is asked for;
    and the columns asked for with `load`, by attribute name, as the ORM would have read them."""

    seq: int
    cancel_requested: bool
    loaded: dict[str, Any] = field(default_factory=dict)


def progress_update(
    job_pk: uuid.UUID,
    *,
    prompt_id: uuid.UUID | None,
    statuses: Collection[str],
    values: Mapping[str, Any],
    seq_added: int,
) -> RowUpdated | None:
    """Store `values` and raise the seq by `seq_added`, only while the job is in one of `statuses`
    with this `prompt_id` (its attempt); None when it is not (closed or requeued meanwhile)."""
    if prompt_id is None:
        return None  # never in an attempt (a saved job always has one: Job.save)
    return _update(job_pk, {"status": sorted(statuses), "prompt_id": [prompt_id]}, values, seq_added)


def status_update(
    job_pk: uuid.UUID, *, current: str, values: Mapping[str, Any], seq_added: int, load: Sequence[str] = ()
) -> RowUpdated | None:
    """Store `values` (the new status among them) and raise the seq by `seq_added`, only while the
    job's status is still `current` (a compare-and-set); None when someone moved it first. `load`:
    columns (attribute names) to read back in the same round trip, such as those an instance read
    with `only()` lacks (a take reads its candidates so)."""
    return _update(job_pk, {"status": [current]}, values, seq_added, tuple(load))


# (database, vendor, columns set, conditions with their number of values, columns read) -> the statement
_statements: dict[tuple[str, str, tuple[str, ...], tuple[tuple[str, int], ...], tuple[str, ...]], str] = {}


def _update(
    job_pk: uuid.UUID,
    conditions: Mapping[str, Sequence[Any]],
    values: Mapping[str, Any],
    seq_added: int,
    load: tuple[str, ...] = (),
) -> RowUpdated | None:
    shape = tuple((name, len(allowed)) for name, allowed in conditions.items())
    key = (connection.alias, connection.vendor, tuple(values), shape, load)
    sql = _statements.get(key) or _statements.setdefault(key, _statement(tuple(values), shape, load))
    params = [_field(name).get_db_prep_save(value, connection) for name, value in values.items()]
    params.append(seq_added)
    params.append(_field("id").get_db_prep_value(job_pk, connection))
    for name, allowed in conditions.items():
        params.extend(_field(name).get_db_prep_value(value, connection) for value in allowed)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    loaded = {name: _from_db(name, value) for name, value in zip(load, row[2:], strict=True)}
    return RowUpdated(seq=int(row[0]), cancel_requested=row[1] is not None, loaded=loaded)


# (database, column) -> its column expression and the ORM's converters of what is read from it
_converters: dict[tuple[str, str], tuple[Any, list[Any]]] = {}


def _from_db(name: str, value: Any) -> Any:
    """A value read back, converted as the ORM converts what it reads (JSON, UUIDs and dates on SQLite;
    a foreign key as the key it points to: get_col). The converters are looked up once per column."""
    key = (connection.alias, name)
    found = _converters.get(key)
    if found is None:
        column = _field(name).get_col(Job._meta.db_table)
        converters = [*connection.ops.get_db_converters(column), *column.get_db_converters(connection)]
        found = _converters.setdefault(key, (column, converters))
    column, converters = found
    for converter in converters:
        value = converter(value, column, connection)
    return value


def _field(name: str) -> Field[Any, Any]:
    field = Job._meta.get_field(name)
    assert isinstance(field, Field), name  # a column of jobs_job, not a relation's reverse side
    return field


def _statement(fields: tuple[str, ...], conditions: tuple[tuple[str, int], ...], load: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        db_column = _field(name).column
        assert db_column is not None  # a concrete field's
        return quote(db_column)

    assignments = ", ".join(f"{column(name)} = %s" for name in fields)
    where = " AND ".join(f"{column(name)} IN ({', '.join(['%s'] * count)})" for name, count in conditions)
    seq = column("seq")
    returning = ", ".join([seq, column("cancel_requested_at"), *(column(name) for name in load)])
    return (
        f"UPDATE {quote(Job._meta.db_table)} SET {assignments}, {seq} = {seq} + %s "
        f"WHERE {column('id')} = %s AND {where} RETURNING {returning}"
    )
