"""What one front-door websocket spends on one tracker broadcast, on the event loop, when the broadcast
follows on from the last one (comfy_api.consumers: decode the state and events, comfy_api.ws_follow
`ClientStream.fast`, the ComfyUI messages encoded and sent), beside what the project's own job socket
spends relaying the same broadcast (jobs.consumers.update_text, no decoding):

    python -m devtools.benchmarks.front_door_ws

The broadcasts are the tracker's own shape (jobs.selectors.job_state of a running job, with a
sampler step each and a node start every 20th: a 30-node graph), made once; no database, no sockets. Prints figures,
asserts nothing; noisy on a shared machine: read the median of several runs.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")
django.setup()

from django.utils import timezone  # noqa: E402  (needs the apps loaded)

from comfy_api.ws_follow import ClientStream  # noqa: E402
from comfy_api.ws_messages import PromptMessages  # noqa: E402
from jobs.broadcast import job_state_message  # noqa: E402
from jobs.consumers import update_text  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402
from jobs.selectors import job_state  # noqa: E402

# A 30-node graph, each node reporting 20 steps: 600 broadcasts.
BROADCASTS = 600
RUNS = 5
WORKFLOW = {str(n): {"class_type": "KSampler", "inputs": {"seed": n, "steps": 30}} for n in range(1, 31)}


def broadcasts() -> list[dict[str, Any]]:
    """The layer messages of a running job: a step each, a new node every 20th with its events."""
    job = Job(
        id=uuid.uuid4(),
        status=JobStatus.RUNNING,
        backend="default",
        job_type="image",
        workflow=WORKFLOW,
        created_at=timezone.now(),
        started_at=timezone.now(),
        nodes_total=30,
    )
    job.prompt_id = job.id
    messages, seq = [], 1
    for index in range(BROADCASTS):
        node = str(index // 20 + 1)
        events = []
        if index % 20 == 0:
            at = timezone.now().isoformat()
            events = [
                {"seq": seq + 1, "kind": "node_finished", "at": at, "node_id": str(int(node) - 1), "data": {}},
                {"seq": seq + 2, "kind": "node_started", "at": at, "node_id": node, "data": {"class_type": "KSampler"}},
            ]
            seq += 2
        job.seq, job.version = seq, index + 1
        job.current_node_id, job.current_node_class, job.current_node_name = node, "KSampler", "KSampler"
        job.step_value, job.step_max = float(index % 20 + 1), 20.0
        messages.append(job_state_message(job_state(job), events))
    return messages


def front_door(messages: list[dict[str, Any]]) -> float:
    stream = ClientStream(user=None, client_id="bench")
    job_id = messages[0]["id"]
    stream.prompts[job_id] = PromptMessages(prompt_id="bench", started=True, last_seq=1)
    start = time.perf_counter()
    for message in messages:
        state, events = json.loads(message["state_json"]), json.loads(message["events_json"])
        frames = stream.fast(job_id, state, events)
        assert frames is not None, "every broadcast here follows on"
        for frame in frames:
            json.dumps(frame)
    return time.perf_counter() - start


def project_socket(messages: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    for message in messages:
        update_text(message, with_events=True)
    return time.perf_counter() - start


def main() -> None:
    messages = broadcasts()
    size = statistics.mean(len(m["state_json"]) + len(m["events_json"]) for m in messages)
    print(f"{BROADCASTS} broadcasts of a running job, {size:.0f} bytes of JSON each on average; {RUNS} runs")
    print(f"{'socket':>28} {'median us/broadcast':>20} {'broadcasts/s per core':>22}")
    for name, measure in (("front door (/comfy/ws)", front_door), ("project (ws/jobs/<id>/)", project_socket)):
        per = statistics.median(measure(messages) for _ in range(RUNS)) / BROADCASTS
        print(f"{name:>28} {per * 1e6:>20.1f} {1 / per:>22,.0f}")


if __name__ == "__main__":
    main()
