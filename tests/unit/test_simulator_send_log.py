"""The simulator's send log (`--record-sends`, GET /sim/sent): when each `progress` message went out.

ComfyUI's progress messages carry no timestamp; devtools/benchmarks/progress_latency.py matches what a
browser is shown to the send time of the same (prompt_id, node, value), so the log must list exactly
the progress messages a client received, with wall-clock times.
"""

from __future__ import annotations

import time

import requests

from devtools.simulator_process import InProcessSimulator, SimulatorClient, SimulatorProcess
from tests.unit.test_simulator_protocol import sleep_prompt


def test_send_log_lists_every_progress_message_a_client_received(tmp_path) -> None:
    with InProcessSimulator(output_dir=tmp_path / "output", extra_args=["--record-sends"]) as sim:
        client = SimulatorClient(sim)
        client.connect()
        before = time.time()
        prompt_id = client.submit(sleep_prompt(seconds=0.3))
        client.wait_finished(prompt_id)
        received = [m["data"] for m in client.log.messages("progress")]
        client.finish()

        sent = requests.get(sim.url + "/sim/sent", params={"prompt_id": prompt_id}, timeout=10).json()

    assert len(received) > 10  # TestSleep reports about every 10 ms
    assert [(s["node"], s["value"], s["max"]) for s in sent] == [(r["node"], r["value"], r["max"]) for r in received]
    assert {s["sid"] for s in sent} == {client.client_id}
    times = [s["sent_at"] for s in sent]
    assert times == sorted(times)
    assert before < times[0] and times[-1] < time.time()


def test_send_log_is_off_by_default_and_never_under_api(comfyui_sim: SimulatorProcess) -> None:
    # Off, a long-running simulator keeps nothing; and like every /sim route it is no ComfyUI route.
    assert requests.get(comfyui_sim.url + "/sim/sent", timeout=10).status_code == 404
    assert requests.get(comfyui_sim.url + "/api/sim/sent", timeout=10).status_code == 404
