"""A GPU worker that waits after its last job (jobs.tracking.backend_work) hears a new job's wake
through Redis at once, hears each wake once, and is not woken by a wake for later; while it says it
listens, a wake sends no broker message."""

from __future__ import annotations

import threading
import time

import pytest
from celery.canvas import Signature
from django.db import transaction

from fleet.backends import gpu_queue
from jobs.wake import backends_wake, wake_listen, wake_unlisten, wake_wait

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_wake_sent_while_a_worker_waits_reaches_it_and_is_heard_once():
    heard: list[bool] = []
    waiting = threading.Thread(target=lambda: heard.append(wake_wait("gpu-x", 10.0)))
    waiting.start()
    time.sleep(0.2)  # it waits
    with transaction.atomic():
        backends_wake(["gpu-x"])  # sent once the transaction commits
    waiting.join(5)
    assert heard == [True], "the wake reached the waiting worker"

    for _ in range(2):
        with transaction.atomic():
            backends_wake(["gpu-x"], force=True)  # two wakes while no worker waits
    assert wake_wait("gpu-x", 0.2), "a worker that waits later hears them"
    assert not wake_wait("gpu-x", 0.2), "once"


def test_a_wake_for_later_does_not_wake_a_waiting_worker_now():
    with transaction.atomic():
        backends_wake(["gpu-y"], countdown=30)  # a retry's backoff
    assert not wake_wait("gpu-y", 0.2)


def test_a_wake_sends_no_broker_message_while_the_worker_listens_and_one_after(monkeypatch):
    sent: list[str] = []
    monkeypatch.setattr(Signature, "apply_async", lambda self, *args, **options: sent.append(options["queue"]))

    wake_listen("gpu-z", 5.0)
    with transaction.atomic():
        backends_wake(["gpu-z"], force=True)
    assert sent == [], "the listening worker hears it through Redis alone"
    assert wake_wait("gpu-z", 0.2)

    wake_unlisten("gpu-z")
    with transaction.atomic():
        backends_wake(["gpu-z"], force=True)
    assert sent == [gpu_queue("gpu-z")], "a worker that stopped listening is woken through the broker"

    wake_listen("gpu-z", 0.1)
    time.sleep(0.3)  # its mark lapsed: a worker that died listening is woken through the broker
    with transaction.atomic():
        backends_wake(["gpu-z"], force=True)
    assert sent == [gpu_queue("gpu-z")] * 2
