"""Saving an output under the server's file name, and only inside the folder asked for.

The name comes from the download's Content-Disposition (the server's own tamed name, with the
extension of what the bytes are), else from the name ComfyUI gave the file. Either is untrusted:
a name with a path separator, `..`, or a control character is refused, never cleaned into
something else, and an existing file is not overwritten unless asked.
"""

from __future__ import annotations

import os
import unicodedata
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path

import requests

from anime_client.errors import DownloadRefused, ServerUnreachable
from anime_client.states import Output

CHUNK_BYTES = 1 << 20


def server_file_name(response: requests.Response, output: Output) -> str:
    header = response.headers.get("Content-Disposition", "")
    if header:
        message = Message()
        message["Content-Disposition"] = header
        params = message.get_params(header="content-disposition") or []
        # RFC 6266: filename*= (RFC 5987, any characters) wins over the plain filename= fallback.
        extended = [value for name, value in params if name == "filename" and isinstance(value, tuple)]
        if extended:
            return collapse_rfc2231_value(extended[0])
        name = message.get_filename()
        if name:
            return name
    return output.filename


def refused_name_reason(name: str) -> str | None:
    """Why `name` may not be used as a file name in the download folder; None when it may."""
    if not name or name in (".", ".."):
        return "it is empty or a directory name"
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if any(sep in name for sep in separators):
        return "it has a path separator"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "it has a control character"
    return None


def save_response(response: requests.Response, output: Output, directory: Path, *, overwrite: bool = False) -> Path:
    """Stream the body into `directory/<server's name>`; a partial file never takes the final name."""
    name = server_file_name(response, output)
    reason = refused_name_reason(name)
    if reason:
        raise DownloadRefused(f"output {output.id}: refused the file name {name!r}: {reason}")
    target = directory / name
    if target.exists() and not overwrite:
        raise DownloadRefused(f"output {output.id}: {target} exists; not overwritten (use --overwrite)")
    partial = directory / f".{name}.part"
    try:
        with open(partial, "wb") as handle:
            for chunk in response.iter_content(CHUNK_BYTES):
                handle.write(chunk)
        os.replace(partial, target)
    except requests.RequestException as exc:
        raise ServerUnreachable(f"output {output.id}: the download broke off ({type(exc).__name__})") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target
