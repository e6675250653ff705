"""The Grafana dashboard (docker/grafana/anime-production.json) draws only metrics the app exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.core import Metric

from metrics.collector import database_metrics
from metrics.recorder import PROCESS_REGISTRY

pytestmark = pytest.mark.django_db

DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana" / "anime-production.json"
METRIC_NAME = re.compile(r"\banime_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


def sample_names(families: list[Metric]) -> set[str]:
    """The series names Prometheus stores for these families (a counter `x` is `x_total`, ...)."""
    names: set[str] = set()
    for family in families:
        suffixes = SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def exported() -> set[str]:
    return sample_names([*PROCESS_REGISTRY.collect(), *database_metrics()])


def panels(items: list[dict]) -> list[dict]:
    found = []
    for item in items:
        found.append(item)
        found.extend(panels(item.get("panels", [])))
    return found


def test_every_panel_draws_metrics_the_app_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported()
    drawn = [panel for panel in panels(dashboard["panels"]) if panel["type"] != "row"]
    assert drawn
    used: set[str] = set()
    for panel in drawn:
        expressions = [target["expr"] for target in panel["targets"]]
        assert expressions, f"panel {panel['title']!r} has no query"
        for expression in expressions:
            metrics = set(METRIC_NAME.findall(expression))
            assert metrics, f"panel {panel['title']!r}: {expression!r} names no metric"
            unknown = metrics - names
            assert not unknown, f"panel {panel['title']!r} draws {sorted(unknown)}, which the app does not export"
            used |= metrics
    variables = [variable.get("definition", "") for variable in dashboard["templating"]["list"]]
    for definition in variables:
        assert set(METRIC_NAME.findall(definition)) <= names
    # What the dashboard is for (issue 14): each of these has a panel.
    for wanted in (
        "anime_queue_depth",
        "anime_queue_oldest_wait_seconds",
        "anime_jobs",
        "anime_job_run_seconds_bucket",
        "anime_job_queue_wait_seconds_bucket",
        "anime_job_failures_total",
        "anime_failed_jobs",
        "anime_broadcasts_total",
        "anime_progress_writes_total",
        "anime_tracker_reconnects_total",
        "anime_backend_up",
        "anime_backend_vram_free_bytes",
    ):
        assert wanted in used, f"no panel draws {wanted}"


def test_panels_do_not_overlap():
    dashboard = json.loads(DASHBOARD.read_text())
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard["panels"]):
        grid = panel["gridPos"]
        for y in range(grid["y"], grid["y"] + grid["h"]):
            for x in range(grid["x"], grid["x"] + grid["w"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        assert grid["x"] + grid["w"] <= 24
