"""Stored files read in pieces, whatever the storage: the filesystem under MEDIA_ROOT or an S3-compatible
store (django-storages), so that downloads can answer HTTP Range requests without reading a whole video
first, and S3 downloads can be answered with a short-lived signed URL.

django-storages' own `S3File` downloads the whole object into a temporary file on its first read: a
2-second seek into a 4 GiB video would fetch 4 GiB (into memory, with its default max_memory_size of 0).
Here an S3 read is one (ranged) GET whose body is read as it arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.storage import Storage
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

CHUNK_BYTES = 256 * 1024
# What django-storages' S3File (thumbnails, anything else that opens a stored file) keeps in memory
# before spooling to a temporary file; its default, 0, never spools: a whole video in memory.
S3FILE_MEMORY_BYTES = 16 * 1024 * 1024
# What a storage raises when it cannot take or give a file: the filesystem's OSError (a full disk, a
# lost mount), boto3's and botocore's errors (an endpoint that refuses, times out or answers 5xx).
STORE_ERRORS: tuple[type[Exception], ...] = (OSError, BotoCoreError, ClientError, Boto3Error)


class ObjectStore(S3Storage):
    """django-storages' S3 storage with bounded waits: a store that does not answer is an error the
    tracker retries (jobs.tracking.ending), not a worker that hangs for boto3's default minute."""

    def __init__(self, **options: Any) -> None:
        options.setdefault(
            "client_config",
            Config(
                s3={"addressing_style": options.get("addressing_style")},
                signature_version=options.get("signature_version") or "s3v4",
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )
        options.setdefault("max_memory_size", S3FILE_MEMORY_BYTES)
        super().__init__(**options)

    def object_key(self, name: str) -> str:
        return str(self._normalize_name(clean_name(name)))


def stored_head(storage: Storage, name: str, size: int) -> tuple[bytes, int]:
    """The first `size` bytes of a stored file and its whole length, in one request on S3.
    Raises FileNotFoundError when the storage has no such file."""
    if isinstance(storage, ObjectStore):
        return _object_head(storage, name, size)
    with storage.open(name, "rb") as handle:
        head = handle.read(size)
    return head, storage.size(name)


def stored_chunks(storage: Storage, name: str, start: int, end: int) -> Iterator[bytes]:
    """Bytes `start` to `end` (inclusive) of a stored file, in chunks, read as they are sent."""
    if isinstance(storage, ObjectStore):
        yield from _object_chunks(storage, name, start, end)
        return
    remaining = end - start + 1
    with storage.open(name, "rb") as handle:
        handle.seek(start)
        while remaining > 0:
            chunk = handle.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


@contextmanager
def stored_reader(storage: Storage, name: str) -> Iterator[BinaryIO]:
    """A stored file as a stream read once from the start (to copy it elsewhere: an input placed in
    ComfyUI). On S3, the object's body as it arrives. Raises FileNotFoundError when it is gone."""
    if not isinstance(storage, ObjectStore):
        with storage.open(name, "rb") as handle:
            yield cast(BinaryIO, handle)
        return
    body = _object_get(storage, name)["Body"]
    try:
        yield cast(BinaryIO, body)
    finally:
        body.close()


def signed_download_url(
    storage: Storage, name: str, *, content_type: str, disposition: str, seconds: int
) -> str | None:
    """A URL the store itself answers for `seconds`, carrying the type and disposition the project
    decided (the store would otherwise send whatever type the object was saved with); None for a
    storage that cannot sign (the filesystem: the file is streamed instead)."""
    if not isinstance(storage, ObjectStore):
        return None
    parameters = {
        "ResponseContentType": content_type,
        "ResponseContentDisposition": disposition,
        "ResponseCacheControl": "private, no-store",
    }
    return str(storage.url(name, parameters=parameters, expire=seconds))


def _object_get(storage: ObjectStore, name: str, **options: str) -> Any:
    client = storage.connection.meta.client
    try:
        return client.get_object(Bucket=storage.bucket_name, Key=storage.object_key(name), **options)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404"):
            raise FileNotFoundError(name) from exc
        raise


def _object_head(storage: ObjectStore, name: str, size: int) -> tuple[bytes, int]:
    try:
        answer = _object_get(storage, name, Range=f"bytes=0-{size - 1}")
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) == "InvalidRange":  # an empty object has no byte 0
            return b"", 0
        raise
    body = answer["Body"]
    try:
        head = body.read()
    finally:
        body.close()
    # "bytes 0-63/12345": the whole length after the slash.
    total = str(answer.get("ContentRange", "")).rpartition("/")[2]
    return head, int(total) if total.isdigit() else int(answer.get("ContentLength", len(head)))


def _object_chunks(storage: ObjectStore, name: str, start: int, end: int) -> Iterator[bytes]:
    body = _object_get(storage, name, Range=f"bytes={start}-{end}")["Body"]
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()
