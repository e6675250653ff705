"""Percentiles read from roll-up histograms never exceed the longest duration really observed."""

from __future__ import annotations

import pytest

from monitoring.rollups import stats_rollup_refresh
from monitoring.stats import generation_stats, histogram_percentile
from tests.unit.test_stats import finished_job, group

pytestmark = pytest.mark.django_db


def test_a_clamped_percentile_stays_at_or_below_the_longest():
    histogram = [0] * 40
    histogram[5] = 10
    unclamped = histogram_percentile(histogram, 0.95)
    assert unclamped is not None
    assert histogram_percentile(histogram, 0.95, longest=unclamped - 1) == pytest.approx(unclamped - 1)
    assert histogram_percentile(histogram, 0.95, longest=float("inf")) == unclamped


def test_run_p95_is_never_longer_than_the_longest_run():
    for seconds in (9.0, 10.5, 11.0, 11.8):
        finished_job(run=seconds, backend="gpu1")
    stats_rollup_refresh()
    stats = generation_stats(days=7)
    image = group(stats, "job_type", "image")
    assert image["run_p95"] <= 11.8
    assert image["run_p50"] <= 11.8
