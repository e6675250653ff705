"""`anime-jobs report`: the server's statistics (GET /api/stats/) as text, JSON or CSV.

Only what the server computed is shown: per job type and backend the count, success rate, queue
wait and run time p50/p95 (estimates from the server's histograms), and failures per category.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from anime_client.terminal_text import one_line

# The windows /api/stats/ keeps roll-ups for; any other value would silently be answered for 30 days.
WINDOW_DAYS = (1, 7, 30, 90)
GROUP_FIELDS = (
    "count",
    "completed",
    "failed",
    "cancelled",
    "success_rate",
    "wait_p50",
    "wait_p95",
    "run_p50",
    "run_p95",
)
CSV_COLUMNS = ("group", "name", *GROUP_FIELDS)
_SINCE = re.compile(r"^\s*(\d+)\s*([dhw]?)\s*$")
_UNIT_HOURS = {"": 24, "d": 24, "h": 1, "w": 24 * 7}


def since_days(value: str) -> int:
    """`7d`, `24h`, `1w`, `30` as a number of days the server keeps statistics for; ValueError otherwise."""
    found = _SINCE.match(value)
    hours = int(found.group(1)) * _UNIT_HOURS[found.group(2)] if found else -1
    if hours % 24 or hours // 24 not in WINDOW_DAYS:
        choices = ", ".join(f"{days}d" for days in WINDOW_DAYS)
        raise ValueError(f"{value!r}: the server keeps statistics for {choices}")
    return hours // 24


def report_data(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The report's figures, picked from the server's answer; failures per category are None when
    the server does not report them (an older server), never made up here."""

    def groups(key: str) -> list[dict[str, Any]]:
        return [{key: row.get(key), **{f: row.get(f) for f in GROUP_FIELDS}} for row in stats.get(f"by_{key}") or ()]

    failures = stats.get("failures_by_category")
    categories = None
    if failures is not None:
        categories = [{key: row.get(key) for key in ("category", "label", "count")} for row in failures]
    return {
        "window_days": stats.get("window_days"),
        "since": stats.get("since"),
        "generated_at": stats.get("generated_at"),
        "overall": {f: (stats.get("overall") or {}).get(f) for f in GROUP_FIELDS},
        "by_job_type": groups("job_type"),
        "by_backend": groups("backend"),
        "failures_by_category": categories,
    }


def report_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2)


def report_csv(data: Mapping[str, Any]) -> str:
    """One table: a row per job type, backend and the whole window, then a row per failure category
    (its count in `count`, the other columns empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group, key in (("job_type", "job_type"), ("backend", "backend")):
        for row in data["by_" + key]:
            writer.writerow([group, row[key], *(_csv_value(row[f]) for f in GROUP_FIELDS)])
    writer.writerow(["overall", "all", *(_csv_value(data["overall"][f]) for f in GROUP_FIELDS)])
    for row in data["failures_by_category"] or ():
        writer.writerow(["failure_category", row["category"], row["count"], *([""] * (len(GROUP_FIELDS) - 1))])
    return out.getvalue()


def report_text(data: Mapping[str, Any]) -> Group:
    since = str(data["since"] or "")[:16].replace("T", " ")
    parts: list[Any] = [
        Text(f"Jobs finished in the last {data['window_days']} day(s), since {since}", style="bold"),
        _group_table("per job type", "job type", "job_type", data["by_job_type"]),
        _group_table("per backend", "backend", "backend", data["by_backend"]),
        _group_table("all", "", "name", [{"name": "all", **data["overall"]}]),
    ]
    failures = data["failures_by_category"]
    if failures is None:
        parts.append(Text("failures per category: not reported by this server"))
    else:
        table = Table(title="failures per category", title_justify="left")
        table.add_column("category")
        table.add_column("jobs", justify="right")
        for row in failures:
            table.add_row(one_line(str(row["category"])), str(row["count"]))
        if not failures:
            table.add_row("(none)", "0")
        parts.append(table)
    parts.append(Text("p50/p95: estimates from the server's histograms of completed jobs' wait and run times"))
    return Group(*parts)


def _group_table(title: str, label: str, key: str, rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    if label:
        table.add_column(label)
    for name in ("jobs", "success", "wait p50", "wait p95", "run p50", "run p95"):
        table.add_column(name, justify="right")
    for row in rows:
        cells = [
            str(row["count"] or 0),
            _percent(row["success_rate"]),
            *(duration_text(row[f]) for f in ("wait_p50", "wait_p95", "run_p50", "run_p95")),
        ]
        table.add_row(*([one_line(str(row[key]))] if label else []), *cells)
    return table


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


def _csv_value(value: Any) -> Any:
    return "" if value is None else value
