"""A Python client and the `anime-jobs` command line for the jobs server's public API.

    from anime_client import Client
    client = Client("http://127.0.0.1:8000", api_key)
    job = client.submit(workflow, inputs={"12": Path("keyframe.png")}, priority=7)
    final = client.wait(job.id)

It imports nothing of the server (an import-linter contract in pyproject.toml checks it).
"""

from anime_client.client import Client
from anime_client.errors import (
    AnimeClientError,
    ApiError,
    AuthenticationFailed,
    BadRequest,
    Conflict,
    DownloadRefused,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    ServerUnreachable,
    WaitTimeout,
    WorkflowError,
)
from anime_client.states import Asset, JobState, Output

__all__ = [
    "AnimeClientError",
    "ApiError",
    "Asset",
    "AuthenticationFailed",
    "BadRequest",
    "Client",
    "Conflict",
    "DownloadRefused",
    "JobState",
    "NotFound",
    "Output",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "ServerUnreachable",
    "WaitTimeout",
    "WorkflowError",
]
