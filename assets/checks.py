"""Configuration checks: a bad asset limit or file storage setting stops the start with a clear message."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register

# Each must let something through (anime_production/settings.py, "Input assets").
ASSET_LIMITS = (
    "ASSET_MAX_BYTES",
    "ASSET_MAX_PIXELS",
    "ASSET_MAX_FRAMES",
    "ASSET_MAX_SECONDS",
    "ASSET_MAX_PER_USER",
    "ASSET_MAX_BYTES_PER_USER",
)


@register()
def asset_limits_check(app_configs, **kwargs) -> list[Error]:
    return [
        Error(f"{name} must be a positive number, not {getattr(settings, name)!r}", id="assets.E001")
        for name in ASSET_LIMITS
        if not isinstance(getattr(settings, name), int | float) or getattr(settings, name) <= 0
    ]


FILE_DOWNLOAD_MODES = ("stream", "redirect")
# A signed URL lives long enough to start a download, not long enough to be passed around.
FILE_DOWNLOAD_URL_MAX_SECONDS = 3600


@register()
def storage_check(app_configs, **kwargs) -> list[Error]:
    """The file storage (README "Files and storage"): the filesystem, or an S3-compatible store."""
    errors = []
    if settings.FILE_DOWNLOADS not in FILE_DOWNLOAD_MODES:
        errors.append(
            Error(
                f"FILE_DOWNLOADS must be one of {', '.join(FILE_DOWNLOAD_MODES)}, not {settings.FILE_DOWNLOADS!r}",
                id="assets.E002",
            )
        )
    if not 1 <= settings.FILE_DOWNLOAD_URL_SECONDS <= FILE_DOWNLOAD_URL_MAX_SECONDS:
        errors.append(
            Error(
                f"FILE_DOWNLOAD_URL_SECONDS must be 1 to {FILE_DOWNLOAD_URL_MAX_SECONDS}, "
                f"not {settings.FILE_DOWNLOAD_URL_SECONDS!r}",
                id="assets.E003",
            )
        )
    # The tracker retries storing a finished job's outputs this long with no progress from ComfyUI: the
    # stuck sweep must not take the job for stuck meanwhile.
    if not 0 <= settings.STORAGE_RETRY_SECONDS < settings.JOB_STUCK_FLOOR_SECONDS:
        errors.append(
            Error(
                f"STORAGE_RETRY_SECONDS must be 0 or more and below JOB_STUCK_FLOOR_SECONDS "
                f"({settings.JOB_STUCK_FLOOR_SECONDS}), not {settings.STORAGE_RETRY_SECONDS!r}",
                hint="a job whose outputs wait for the store that long would be failed as stuck",
                id="assets.E008",
            )
        )
    if settings.AWS_STORAGE_BUCKET_NAME:
        errors += _object_store_errors()
    elif settings.FILE_DOWNLOADS == "redirect":
        errors.append(
            Error(
                "FILE_DOWNLOADS=redirect needs an S3-compatible store (AWS_STORAGE_BUCKET_NAME): "
                "the filesystem cannot sign a URL",
                id="assets.E004",
            )
        )
    return errors


def _object_store_errors() -> list[Error]:
    errors = []
    bucket = settings.AWS_STORAGE_BUCKET_NAME
    if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in ".-" for c in bucket):
        errors.append(
            Error(
                f"AWS_STORAGE_BUCKET_NAME {bucket!r} is no S3 bucket name (3-63 of a-z, 0-9, '.', '-')",
                id="assets.E005",
            )
        )
    endpoint = settings.AWS_S3_ENDPOINT_URL
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            errors.append(
                Error(
                    f"AWS_S3_ENDPOINT_URL {endpoint!r} is no http(s) URL",
                    hint="e.g. http://minio:9000; leave it unset for AWS itself",
                    id="assets.E006",
                )
            )
    if bool(settings.AWS_ACCESS_KEY_ID) != bool(settings.AWS_SECRET_ACCESS_KEY):
        errors.append(
            Error("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set together, or neither", id="assets.E007")
        )
    return errors


@register(deploy=True)
def object_store_reachable_check(app_configs, **kwargs) -> list[Error]:
    """`manage.py check --deploy`: the bucket answers with these credentials (a start does not wait
    for the network: a store that is down at start is retried when files are stored)."""
    if not settings.AWS_STORAGE_BUCKET_NAME:
        return []
    from django.core.files.storage import storages

    from assets.object_store import STORE_ERRORS, ObjectStore

    storage = storages["default"]
    if not isinstance(storage, ObjectStore):
        return []
    try:
        storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)
    except STORE_ERRORS as exc:
        return [
            Error(
                f"the bucket {storage.bucket_name!r} at {settings.AWS_S3_ENDPOINT_URL or 'AWS'} does not answer: "
                f"{type(exc).__name__}: {exc}",
                hint="check AWS_STORAGE_BUCKET_NAME, AWS_S3_ENDPOINT_URL and the credentials",
                id="assets.E009",
            )
        ]
    return []
