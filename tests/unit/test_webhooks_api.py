"""REST: /api/webhooks/ (CRUD, the secret shown once and rotatable, deliveries), a job's own
callback at submission, and a job's deliveries."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook as ReferenceVerifier

from tests.factories import SLEEP_WORKFLOW, UserFactory, api_key_for
from tests.unit.webhook_queue import webhook_queue_run
from tests.webhook_receiver import WebhookReceiver
from webhooks.models import Webhook

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _local_receivers_allowed(settings) -> None:
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def receiver():
    with WebhookReceiver() as running:
        yield running


def subscribe(api: APIClient, url: str, **extra):
    return api.post("/api/webhooks/", {"url": url, "events": ["job.completed", "job.failed"], **extra}, format="json")


def client_of(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(user)}")
    return client


def test_a_subscription_shows_its_secret_once(api, receiver):
    created = subscribe(api, receiver.url, job_types=["video"], description="render farm")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["job.completed", "job.failed"] and body["job_types"] == ["video"]
    shown = api.get(f"/api/webhooks/{body['id']}/").json()
    listed = api.get("/api/webhooks/").json()["results"]
    assert "secret" not in shown and all("secret" not in item for item in listed)
    assert [item["id"] for item in listed] == [body["id"]]


def test_a_subscription_is_changed_and_deleted_by_its_owner_only(api, receiver):
    webhook_id = subscribe(api, receiver.url).json()["id"]
    stranger = client_of(UserFactory.create())
    assert stranger.get(f"/api/webhooks/{webhook_id}/").status_code == 404
    assert stranger.delete(f"/api/webhooks/{webhook_id}/").status_code == 404
    changed = api.patch(f"/api/webhooks/{webhook_id}/", {"events": ["job.progress"], "active": False}, format="json")
    assert changed.status_code == 200 and changed.json()["events"] == ["job.progress"]
    assert changed.json()["active"] is False
    assert api.delete(f"/api/webhooks/{webhook_id}/").status_code == 204
    assert not Webhook.objects.filter(pk=webhook_id).exists()


@pytest.mark.parametrize(
    "url,reason",
    [
        ("http://10.0.0.8/hook", "10.0.0.8 is a private address"),
        ("http://[::1]:9000/hook", "::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("ftp://127.0.0.1/hook", "only http and https"),
    ],
)
def test_a_url_out_of_bounds_is_a_400_with_the_reason(api, url, reason):
    refused = subscribe(api, url)
    assert refused.status_code == 400
    assert reason in refused.json()["url"][0]


def test_loopback_is_refused_unless_an_administrator_allowed_it(api, receiver, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    refused = subscribe(api, receiver.url)
    assert refused.status_code == 400 and "loopback" in refused.json()["url"][0]


def test_unknown_events_and_filters_are_refused(api, receiver):
    assert "not a valid choice" in str(subscribe(api, receiver.url, events=["job.exploded"]).json()["events"])
    assert "unknown job types" in str(subscribe(api, receiver.url, job_types=["hologram"]).json()["job_types"])
    assert "unknown backends" in str(subscribe(api, receiver.url, backends=["gpu99"]).json()["backends"])


def test_alerts_are_for_staff_who_may_receive_them(api, receiver):
    refused = subscribe(api, receiver.url, events=["alert.failure_rate"])
    assert refused.status_code == 400 and "fleet-wide" in str(refused.json()["events"])
    staff = UserFactory.create(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="receive_alerts"))
    allowed = subscribe(client_of(staff), receiver.url, events=["alert.failure_rate", "alert.resolved"])
    assert allowed.status_code == 201, allowed.content


def test_a_user_holds_a_bounded_number_of_subscriptions(api, receiver, settings):
    settings.WEBHOOK_MAX_PER_USER = 2
    assert [subscribe(api, receiver.url).status_code for _ in range(2)] == [201, 201]
    refused = subscribe(api, receiver.url)
    assert refused.status_code == 400 and "2 webhooks" in refused.json()["detail"]


def test_a_test_message_arrives_signed_and_is_listed_with_its_status_code(
    api, receiver, django_capture_on_commit_callbacks
):
    created = subscribe(api, receiver.url).json()
    with django_capture_on_commit_callbacks(execute=True):
        sent = api.post(f"/api/webhooks/{created['id']}/test/")
    assert sent.status_code == 202
    webhook_queue_run()
    (request,) = receiver.requests()
    payload = ReferenceVerifier(created["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "webhook.test" and request.headers["webhook-id"] == sent.json()["message_id"]
    (delivery,) = api.get(f"/api/webhooks/{created['id']}/deliveries/").json()["results"]
    assert delivery["status_code"] == 204 and delivery["outcome"] == "delivered" and delivery["attempt"] == 1
    assert delivery["message_id"] == sent.json()["message_id"]


def test_after_a_rotation_both_secrets_verify_until_the_grace_ends(api, receiver, django_capture_on_commit_callbacks):
    created = subscribe(api, receiver.url).json()
    rotated = api.post(f"/api/webhooks/{created['id']}/rotate-secret/").json()
    assert rotated["secret"] != created["secret"] and rotated["previous_secret_valid_until"]
    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"/api/webhooks/{created['id']}/test/")
    webhook_queue_run()
    (request,) = receiver.requests()
    for secret in (created["secret"], rotated["secret"]):
        assert ReferenceVerifier(secret).verify(request.body, request.headers)["type"] == "webhook.test"


def test_a_job_submitted_with_a_callback_gets_its_secret_in_the_answer(api, receiver):
    answer = api.post(
        "/api/jobs/",
        {"workflow": SLEEP_WORKFLOW, "job_type": "image", "webhook": {"url": receiver.url}},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    hook = answer.json()["webhook"]
    assert hook["url"] == receiver.url and hook["secret"].startswith("whsec_")
    assert hook["events"] == ["job.started", "job.completed", "job.failed", "job.cancelled"]
    assert "webhook" not in api.get(f"/api/jobs/{answer.json()['id']}/").json()
    assert str(Webhook.objects.get(job_id=answer.json()["id"]).pk) == hook["id"]


def test_a_job_callback_may_bring_its_own_secret_and_is_checked_like_any_webhook(api, receiver):
    secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
    ok = api.post(
        "/api/jobs/",
        {"workflow": SLEEP_WORKFLOW, "job_type": "image", "webhook": {"url": receiver.url, "secret": secret}},
        format="json",
    )
    assert ok.status_code == 201 and ok.json()["webhook"]["secret"] == secret
    refused = api.post(
        "/api/jobs/",
        {"workflow": SLEEP_WORKFLOW, "job_type": "image", "webhook": {"url": "http://192.168.0.10/h"}},
        format="json",
    )
    assert refused.status_code == 400 and "private address" in str(refused.json()["webhook"]["url"])


def test_a_jobs_deliveries_are_its_owners_to_see(api, user, receiver, django_capture_on_commit_callbacks):
    job = api.post(
        "/api/jobs/", {"workflow": SLEEP_WORKFLOW, "job_type": "image", "webhook": {"url": receiver.url}}, format="json"
    ).json()
    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"/api/jobs/{job['id']}/cancel/")
    webhook_queue_run()
    (delivery,) = api.get(f"/api/jobs/{job['id']}/webhook-deliveries/").json()
    assert delivery["event"] == "job.cancelled" and delivery["status_code"] == 204
    assert client_of(UserFactory.create()).get(f"/api/jobs/{job['id']}/webhook-deliveries/").status_code == 404
