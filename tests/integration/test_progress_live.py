"""Progress that tells the truth, on real parts: a sampler's steps and previews, display names and
categories from /object_info, a timeline a reconnecting client can resume, a learned ETA."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from anime_production.asgi import application
from jobs.models import NodeTiming
from tests.conftest import wait_for
from tests.factories import api_key_for
from tests.integration.test_job_lifecycle import FINAL, submit, wait_final

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ORIGIN = [(b"origin", b"http://localhost:8000")]


def sampler_workflow(steps: int = 30, seed: int | None = None) -> dict:
    """A real text-to-image graph, as studios submit them (API format)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox in the snow, anime style", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed if seed is not None else random.randrange(1 << 40),
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "fox", "images": ["8", 0]}},
    }


async def follow_to_end(ws: WebsocketCommunicator, timeline: list[dict]) -> list[dict]:
    """Collect timeline events from the socket until the job's state is final, then disconnect."""
    state: dict[str, Any] | None = None
    while (state or {}).get("status") not in FINAL:
        message = await ws.receive_json_from(timeout=30)
        timeline += message["events"]
        state = message["job"] or state
    await ws.disconnect()
    return timeline


def job_now(api, job_id: str) -> dict:
    return api.get(f"/api/jobs/{job_id}/").json()


def test_sampler_progress_names_categories_and_live_preview(live, api):
    job = submit(api, sampler_workflow(steps=40))

    def sampling_with_preview() -> dict | None:
        state = job_now(api, job["id"])
        return (
            state
            if (state.get("current_node") or {}).get("class_type") == "KSampler" and state["preview_url"]
            else None
        )

    sampling = wait_for(
        sampling_with_preview,
        timeout=30,
        message="the sampler running with a preview",
    )
    assert sampling["current_node"] == {"id": "3", "class_type": "KSampler", "name": "KSampler", "category": "sampling"}
    assert sampling["step"]["max"] == 40 and 1 <= sampling["step"]["value"] <= 40
    assert sampling["message"] == f"KSampler: step {sampling['step']['value']:g}/40"
    preview = api.get(sampling["preview_url"])
    assert preview.status_code == 200 and preview["Content-Type"] == "image/jpeg"
    assert b"".join(preview.streaming_content).startswith(b"\xff\xd8"), "not a JPEG"

    done = wait_final(api, job["id"])
    assert done["status"] == "completed" and done["preview_url"] is None
    events = api.get(f"/api/jobs/{job['id']}/events/?after=0").json()["events"]
    started = [(e["node_id"], e["data"]["name"]) for e in events if e["kind"] == "node_started"]
    assert ("3", "KSampler") in started and ("8", "VAE Decode") in started and ("4", "Load Checkpoint") in started
    steps = [e for e in events if e["kind"] == "steps"]
    assert steps and steps[-1]["data"] == {"value": 40, "max": 40}, "the last step is on the timeline"
    assert len(steps) < 10, "steps are sampled, not stored one by one"
    timings = {t.node_id: t for t in NodeTiming.objects.filter(job_id=job["id"])}
    assert set(timings) == {"3", "4", "5", "6", "7", "8", "9"}
    assert timings["3"].steps == 40 and timings["3"].duration > timings["5"].duration


def test_events_api_returns_what_follows_a_seq(live, api):
    job = submit(api, sampler_workflow(steps=5))
    wait_final(api, job["id"])
    everything = api.get(f"/api/jobs/{job['id']}/events/?after=0").json()
    seqs = [e["seq"] for e in everything["events"]]
    assert seqs == list(range(1, len(seqs) + 1)), "the timeline has gaps"
    assert everything["seq"] == seqs[-1]
    middle = seqs[len(seqs) // 2]
    rest = api.get(f"/api/jobs/{job['id']}/events/?after={middle}").json()["events"]
    assert [e["seq"] for e in rest] == [s for s in seqs if s > middle]
    assert api.get(f"/api/jobs/{job['id']}/events/?after=-3").status_code == 400


def test_reconnecting_subscriber_ends_with_the_same_timeline(live, api, user):
    token = api_key_for(user)
    job = submit(api, sampler_workflow(steps=60))
    path = f"/ws/jobs/{job['id']}/?"
    headers = [*ORIGIN, (b"x-api-key", token.encode())]

    async def steady() -> list[tuple]:
        ws = WebsocketCommunicator(application, f"{path}after=0", headers=headers)
        assert (await ws.connect())[0]
        timeline = await follow_to_end(ws, [])
        return [(e["seq"], e["kind"], e["node_id"]) for e in timeline]

    async def flaky() -> list[tuple]:
        timeline: list[dict[str, Any]] = []
        ws = WebsocketCommunicator(application, f"{path}after=0", headers=headers)
        assert (await ws.connect())[0]
        while not any(e["kind"] == "node_started" and e["node_id"] == "3" for e in timeline):
            message = await ws.receive_json_from(timeout=30)
            timeline += message["events"]
        await ws.disconnect()  # the train goes into a tunnel, mid-sampling
        await asyncio.sleep(1.0)
        ws = WebsocketCommunicator(application, f"{path}after={timeline[-1]['seq']}", headers=headers)
        assert (await ws.connect())[0]
        timeline = await follow_to_end(ws, timeline)
        return [(e["seq"], e["kind"], e["node_id"]) for e in timeline]

    async def both():
        return await asyncio.gather(steady(), flaky())

    steady_timeline, flaky_timeline = async_to_sync(both)()
    assert flaky_timeline == steady_timeline
    assert "node_finished" in {kind for _, kind, _ in steady_timeline}
    stored = api.get(f"/api/jobs/{job['id']}/events/?after=0").json()["events"]
    assert [(e["seq"], e["kind"], e["node_id"]) for e in stored] == steady_timeline


def test_eta_is_learned_from_finished_jobs_and_labelled_an_estimate(live, api):
    first = submit(api, sampler_workflow(steps=40, seed=1))
    assert job_now(api, first["id"])["eta"] is None or job_now(api, first["id"])["eta"]["estimate"]
    assert wait_final(api, first["id"])["status"] == "completed"
    second = submit(api, sampler_workflow(steps=40, seed=2))  # same shape and cost, another seed

    def running_with_eta() -> dict | None:
        state = job_now(api, second["id"])
        return state if state["status"] == "running" and state["eta"] else None

    running = wait_for(
        running_with_eta,
        timeout=30,
        message="the second run to show an ETA",
    )
    assert running["eta"]["estimate"] is True and running["eta"]["basis"]
    done = wait_final(api, second["id"])
    assert done["eta"] is None, "a finished job has no estimate"
