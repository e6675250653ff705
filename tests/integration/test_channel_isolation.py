"""Two deployments on one Redis server (different database numbers) never see each other's live
updates: the pub/sub channel layer ignores the database number, so the prefix must differ."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from channels_redis.pubsub import RedisPubSubChannelLayer

from devtools.processes import REPO

PROBE = "import json; from django.conf import settings; print(json.dumps(settings.CHANNEL_LAYERS['default']['CONFIG']))"


def layer_config(redis_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"CHANNEL_LAYER_PREFIX", "REDIS_URL"}}
    env.update(REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="anime_production.settings")
    code = f"import django; django.setup(); {PROBE}"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_deployments_on_different_redis_databases_do_not_hear_each_other():
    studio_a = layer_config("redis://127.0.0.1:6379/13")
    studio_b = layer_config("redis://127.0.0.1:6379/14")
    assert studio_a["prefix"] != studio_b["prefix"]

    async def scenario() -> tuple[bool, bool]:
        a = RedisPubSubChannelLayer(hosts=studio_a["hosts"], prefix=studio_a["prefix"])
        b = RedisPubSubChannelLayer(hosts=studio_b["hosts"], prefix=studio_b["prefix"])
        try:
            listener = await b.new_channel()
            await b.group_add("job-42", listener)
            own = await a.new_channel()
            await a.group_add("job-42", own)
            await asyncio.sleep(0.2)  # let both subscriptions reach Redis
            await a.group_send("job-42", {"type": "job.update", "secret": "studio A"})
            heard_own = (await asyncio.wait_for(a.receive(own), timeout=5))["secret"] == "studio A"
            try:
                await asyncio.wait_for(b.receive(listener), timeout=1.5)
                heard_other = True
            except TimeoutError:
                heard_other = False
            return heard_own, heard_other
        finally:
            await a.flush()
            await b.flush()

    heard_own, heard_other = asyncio.run(scenario())
    assert heard_own, "the sending deployment hears its own update"
    assert not heard_other, "the other deployment on the same Redis server must not"
