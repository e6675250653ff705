"""Input assets in the admin: the list (owner, type, size, dimensions, sha256, used by N jobs, image
thumbnails served inert) and the job page's input assets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from jobs.services import job_create
from tests.factories import UserFactory
from tests.media_files import asset_of, png, wav

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def test_the_asset_list_says_who_what_how_big_and_how_used(admin_client: Any) -> None:
    owner = UserFactory.create(username="layout-artist")
    image = asset_of(owner, png(48, 27), "layout.png")
    audio = asset_of(owner, wav(0.5), "dialogue.wav")
    for _ in range(2):
        job_create(
            user=owner,
            workflow={"1": {"class_type": "LoadImage", "inputs": {"image": f"asset:{image.id}"}}},
            job_type="image",
        )
    html = admin_client.get("/admin/assets/asset/").content.decode()
    assert "layout-artist" in html and "image/png" in html and "audio/wav" in html
    assert "48×27" in html and image.sha256[:12] in html
    content_url = reverse("admin:assets_asset_content", args=[image.pk])
    assert f'class="asset-thumb" src="{content_url}"' in html
    assert reverse("admin:assets_asset_content", args=[audio.pk]) not in html, "a thumbnail only for images"
    assert '<td class="field-jobs_using">2</td>' in html

    found = admin_client.get("/admin/assets/asset/", {"q": "layout-artist"}).content.decode()
    assert str(image.id)[:8] in found and str(audio.id)[:8] in found
    detail = admin_client.get(reverse("admin:assets_asset_change", args=[image.pk])).content.decode()
    assert image.sha256 in detail and "48×27" in detail

    thumbnail = admin_client.get(content_url)
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/png"
    assert thumbnail["X-Content-Type-Options"] == "nosniff"
    assert thumbnail["Content-Security-Policy"] == "sandbox; default-src 'none'"


def test_the_content_view_needs_the_view_permission(client: Any) -> None:
    asset = asset_of(UserFactory.create(), png(3, 3))
    staff = UserFactory.create(is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("admin:assets_asset_content", args=[asset.pk])).status_code == 403


def test_the_job_page_shows_its_input_assets(admin_client: Any) -> None:
    owner = UserFactory.create()
    pose = asset_of(owner, png(16, 16), "pose.png")
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": f"asset:{pose.id}"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    job = job_create(user=owner, workflow=workflow, job_type="image")
    html = admin_client.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    assert 'id="job-inputs"' in html
    assert "#1 LoadImage" in html and "pose.png" in html
    assert f'src="{reverse("admin:assets_asset_content", args=[pose.pk])}"' in html

    pose_id = pose.pk
    pose.delete()
    html = admin_client.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    assert f"asset:{pose_id}</code> (deleted)" in html
