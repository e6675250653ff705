"""A ComfyUI simulator: ComfyUI 0.8's HTTP and websocket protocol, with fake but timed nodes.

For development and tests of the job tracker without a GPU. It behaves like ComfyUI (message
order, routing by clientId, caching, validation errors, in-memory queue and history), so a client
that works here works against real ComfyUI. No Django imports anywhere in this package.

    python -m devtools.simulator --port 8188 --output-dir /tmp/out
"""

from .options import SimulatorOptions
from .server import build_app, run

__all__ = ["SimulatorOptions", "build_app", "run"]
