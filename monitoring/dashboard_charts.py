"""The dashboard's figures turned into SVG charts (monitoring.charts), one function per page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils.safestring import SafeString

from monitoring.charts import Series, bar_chart, colour, hbar_chart, line_chart, sparkline, state_strip


def _minutes_if_long(values: list[float | None]) -> tuple[list[float | None], str]:
    """Video jobs run for many minutes: show minutes when seconds would be unreadably large."""
    if max((v or 0 for v in values), default=0) >= 600:
        return [None if v is None else round(v / 60, 1) for v in values], " min"
    return values, " s"


def _duration_chart(group: dict[str, Any], name: str) -> SafeString:
    """Queue wait and run time of one group, p50 and p95, on the group's own scale: a 40-minute
    video beside a 40-second image would flatten the image's bars to nothing."""
    values, unit = _minutes_if_long([group["wait_p50"], group["run_p50"], group["wait_p95"], group["run_p95"]])
    return bar_chart(
        ["queue wait", "run time"],
        [Series("p50", values[:2], colour(0)), Series("p95", values[2:], colour(3))],
        title=f"{name}: durations",
        unit=unit,
        width=280,
        height=200,
    )


def _group_charts(groups: list[dict[str, Any]], key: str, noun: str) -> dict[str, SafeString | list[SafeString]]:
    labels = [group[key] for group in groups]
    return {
        "count": bar_chart(
            labels,
            [
                Series("completed", [g["completed"] for g in groups], colour(2)),
                Series("failed", [g["failed"] for g in groups], colour(1)),
                Series("cancelled", [g["cancelled"] for g in groups], colour(7)),
            ],
            title=f"Finished jobs per {noun}",
            stacked=True,
            width=420,
        ),
        "success": bar_chart(
            labels,
            [
                Series(
                    "",
                    [None if g["success_rate"] is None else round(g["success_rate"] * 100, 1) for g in groups],
                    colour(2),
                )
            ],
            title=f"Success rate per {noun}",
            unit=" %",
            width=420,
        ),
        "durations": [_duration_chart(group, group[key]) for group in groups],
    }


def generation_charts(stats: dict[str, Any]) -> dict[str, Any]:
    hourly = stats["throughput_hourly"]
    daily = stats["throughput_daily"]
    hour_labels = [datetime.fromisoformat(point["hour"]).strftime("%d %H:00") for point in hourly]
    day_labels = [point["day"][5:] for point in daily]
    nodes = stats["slowest_nodes"]
    return {
        "by_job_type": _group_charts(stats["by_job_type"], "job_type", "job type"),
        "by_backend": _group_charts(stats["by_backend"], "backend", "backend"),
        "hourly": line_chart(
            hour_labels,
            [
                Series("completed", [p["completed"] for p in hourly], colour(2)),
                Series("failed", [p["failed"] for p in hourly], colour(1)),
            ],
            title=f"Jobs finished per hour, last {len(hourly)} hours",
            width=860,
        ),
        "daily": bar_chart(
            day_labels,
            [
                Series("completed", [p["completed"] for p in daily], colour(2)),
                Series("failed", [p["failed"] for p in daily], colour(1)),
                Series("cancelled", [p["cancelled"] for p in daily], colour(7)),
            ],
            title="Jobs finished per day",
            stacked=True,
            width=860,
        ),
        "nodes": hbar_chart(
            [node["class_type"] for node in nodes],
            [node["mean"] or 0.0 for node in nodes],
            title="Slowest node classes (mean seconds)",
            unit=" s",
            width=860,
        ),
    }


def failure_charts(failures: dict[str, Any]) -> dict[str, SafeString]:
    labels = [category["label"] for category in failures["categories"]]
    per_day = failures["per_day"]
    return {
        "categories": hbar_chart(
            labels, [c["count"] for c in failures["categories"]], title="Failures per category", width=860
        ),
        "per_day": bar_chart(
            [day["day"].strftime("%m-%d") for day in per_day],
            [
                Series(label, [day["counts"][index] for day in per_day], colour(index))
                for index, label in enumerate(labels)
            ],
            title="Failures per day, by category",
            stacked=True,
            width=860,
            height=280,
        ),
    }


BACKEND_CHART_WIDTH = 150


def backend_charts(slots: dict[str, Any], name: str) -> dict[str, SafeString]:
    return {
        # Narrow enough that the backends table fits a laptop screen beside its other columns.
        "reachable": state_strip(
            slots["reachable"], labels=slots["labels"], title=f"{name}: reachable, last 24 h", width=BACKEND_CHART_WIDTH
        ),
        "queue": sparkline(slots["queue"], title=f"{name}: ComfyUI queue length, last 24 h", width=BACKEND_CHART_WIDTH),
        "vram": sparkline(
            slots["vram"],
            title=f"{name}: VRAM in use (%), last 24 h",
            top=100,
            stroke=colour(4),
            width=BACKEND_CHART_WIDTH,
        ),
    }
