"""A ComfyUI-compatible front door: ComfyUI's own HTTP and websocket API, served by the project under
/comfy/ and backed by jobs, the queue and storage, so ComfyUI's clients run on the fleet unchanged."""
