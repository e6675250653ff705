"""Where ComfyUI has a prompt, the one rule the tracker and the sweeps both ask by."""

from __future__ import annotations

from comfyui import ComfyUIClient


def prompt_locate(client: ComfyUIClient, prompt_id: str) -> str | None:
    """ "running", "pending", "history", or None when ComfyUI has no trace of it (lost or never sent).

    /queue first: a prompt that finishes between the two requests then shows up in /history,
    where asking the other way round would find it in neither and call it lost.
    """
    position = client.queue().position(prompt_id)
    if position is not None:
        return position
    return "history" if client.history(prompt_id) is not None else None
