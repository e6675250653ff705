"""The storage settings are checked at start (README "Files and storage"): a bad one stops every
process with a message that names it, instead of failing the first download or the first output."""

from __future__ import annotations

from typing import Any

import pytest

from assets.checks import storage_check


def messages() -> list[str]:
    return [error.msg for error in storage_check(None)]


@pytest.fixture
def s3(settings: Any) -> Any:
    settings.AWS_STORAGE_BUCKET_NAME = "studio-files"
    settings.AWS_S3_ENDPOINT_URL = "http://minio:9000"
    settings.AWS_ACCESS_KEY_ID = "key"
    settings.AWS_SECRET_ACCESS_KEY = "secret"
    return settings


def test_the_defaults_and_a_good_s3_configuration_pass(settings, s3):
    assert messages() == []
    s3.FILE_DOWNLOADS = "redirect"
    assert messages() == []


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("FILE_DOWNLOADS", "public", "FILE_DOWNLOADS"),
        ("FILE_DOWNLOAD_URL_SECONDS", 0, "FILE_DOWNLOAD_URL_SECONDS"),
        ("FILE_DOWNLOAD_URL_SECONDS", 7 * 86400, "FILE_DOWNLOAD_URL_SECONDS"),
        ("STORAGE_RETRY_SECONDS", -1, "STORAGE_RETRY_SECONDS"),
        ("STORAGE_RETRY_SECONDS", 600, "below JOB_STUCK_FLOOR_SECONDS"),
        ("AWS_STORAGE_BUCKET_NAME", "Studio_Files", "AWS_STORAGE_BUCKET_NAME"),
        ("AWS_S3_ENDPOINT_URL", "minio:9000", "AWS_S3_ENDPOINT_URL"),
        ("AWS_SECRET_ACCESS_KEY", "", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_a_bad_setting_is_named(s3, name, value, named):
    setattr(s3, name, value)
    found = messages()
    assert len(found) == 1 and named in found[0], found


def test_signed_redirects_need_an_object_store(settings):
    settings.AWS_STORAGE_BUCKET_NAME = ""
    settings.FILE_DOWNLOADS = "redirect"
    assert any("needs an S3-compatible store" in m for m in messages())
