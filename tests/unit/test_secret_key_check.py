"""A SECRET_KEY left as docker/env.example's placeholder (or the DEBUG-only development key) with DEBUG
off stops the start (the system checks migrate runs): every session would be signed with a public key."""

from __future__ import annotations

import pytest

from access.checks import secret_key_placeholder_check


@pytest.mark.parametrize("key", ["change-me-to-a-long-random-string", "dev-only-insecure-key-change-me", "change-me"])
def test_a_placeholder_key_with_debug_off_is_an_error(settings, key):
    settings.DEBUG = False
    settings.SECRET_KEY = key
    assert [error.id for error in secret_key_placeholder_check(None)] == ["access.E002"]


def test_a_key_of_ones_own_or_debug_on_passes(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = "q2Jx8v0-l4Hf1rP9WcZt7yB3nM6kA5sD"
    assert secret_key_placeholder_check(None) == []
    settings.DEBUG = True
    settings.SECRET_KEY = "dev-only-insecure-key-change-me"
    assert secret_key_placeholder_check(None) == []


def test_the_env_example_key_is_one_the_check_refuses():
    from pathlib import Path

    env = (Path(__file__).resolve().parents[2] / "docker" / "env.example").read_text()
    key = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("SECRET_KEY="))
    assert key.startswith("change-me")
