"""ComfyUI's API-format workflow: a mapping of node ids to {"class_type", "inputs"}.

An input whose value is `[node_id, output_index]` is a link to another node's output; any other
value is a constant. Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Any


def is_link(value: Any) -> bool:
    """True when an input value links to another node's output.

    Node ids are strings in ComfyUI's API format, but some clients write them as numbers: those are
    read as the same links (`str(value[0])` names the node), so they are checked and fingerprinted too.
    """
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and isinstance(value[1], int)
    )
