"""Settings, all read from the environment with local defaults (see README "Configuration")."""

import importlib.util
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_limit(name: str) -> int | str | None:
    """An optional limit: None when unset or empty, else the number (or the text, for a check to refuse)."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.lstrip("-").isdigit() else (raw or None)


DEBUG = env_bool("DEBUG", True)
# The key in the repository is for a developer's own machine only (DEBUG on); with DEBUG off the
# process refuses to start without a SECRET_KEY of its own (anime_production/checks.py says why).
DEV_SECRET_KEY = "dev-only-insecure-key-change-me"
SECRET_KEY = os.environ.get("SECRET_KEY") or (DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (a long random string, kept secret)")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "http://localhost:8000,http://127.0.0.1:8000")
# The login for every active user (access.login): the editor's artists are not staff.
LOGIN_URL = "/accounts/login/"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served as our own static files (no CDN)
    "channels",
    "access",
    "fleet",
    "assets",
    "webhooks",
    "jobs",
    "quotas",
    "workflow_templates",
    "monitoring",
    "alerts",
    "metrics",
    "comfy_api",
]
# The development tools (the ComfyUI simulator, the history generator, benchmarks) are not in the
# product's wheel: their management commands appear only where the dev install has them.
if importlib.util.find_spec("devtools") is not None:
    INSTALLED_APPS.append("devtools")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # The database down: 503 with Retry-After, not a 500 (README fault matrix).
    "access.database_unavailable.DatabaseUnavailableMiddleware",
]

# --- HTTPS and cookies: secure unless DEBUG, each one settable (behind a TLS proxy, for example) ---
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else str(60 * 60 * 24 * 365)))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# "HTTP_X_FORWARDED_PROTO=https" when a proxy that terminates TLS sets that header (and strips it from clients).
if os.environ.get("SECURE_PROXY_SSL_HEADER"):
    _header, _, _value = os.environ["SECURE_PROXY_SSL_HEADER"].partition("=")
    SECURE_PROXY_SSL_HEADER = (_header.strip(), _value.strip())
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

ROOT_URLCONF = "anime_production.urls"
ASGI_APPLICATION = "anime_production.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _seconds_or_none(value: str) -> int | None:
    return None if value.strip().lower() in ("", "none") else int(value)


DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        # Kept for the thread's life unless a number of seconds is given: a connection aged out at 60 s
        # was made again inside some request or some take, once a minute per thread (4-9 ms, and the
        # new server process's cold catalog caches: a POST of 72 ms where the others took 30).
        conn_max_age=_seconds_or_none(os.environ.get("DATABASE_CONN_MAX_AGE", "none")),
        # A kept connection is checked before each request or task reuses it: after a PostgreSQL
        # restart the first request connects afresh instead of failing on the dead socket.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Workers and the web process write concurrently. SQLite refuses to upgrade a read transaction
    # to a write one ("database is locked" at once, whatever the timeout): every transaction takes
    # the write lock when it begins (IMMEDIATE) and waits up to `timeout` for it; WAL lets readers
    # go on while one writes (docs/HAZARDS.md).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
        }
    )
    # A file, not memory, so that worker processes started by the tests share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-db-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Only deployments that run collectstatic (docker/) set it; locally WhiteNoise serves from the apps.
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
# Serve the apps' static files straight from their folders: no collectstatic step to forget.
WHITENOISE_USE_FINDERS = True
MEDIA_URL = os.environ.get("MEDIA_URL", "/media/")
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))
# Files (outputs, thumbnails, previews, input assets): the filesystem under MEDIA_ROOT by default; with
# AWS_STORAGE_BUCKET_NAME set, an S3-compatible store (django-storages), so no two processes share a disk.
# Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or boto3's own chain).
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "")
AWS_S3_ENDPOINT_URL = os.environ.get("AWS_S3_ENDPOINT_URL", "") or None
AWS_ACCESS_KEY_ID = os.environ.get("AWS_ACCESS_KEY_ID", "")
AWS_SECRET_ACCESS_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
# Downloads pass the project's permission checks first, then are streamed by the web process ("stream",
# with HTTP Range) or answered by a redirect to a signed URL valid this many seconds ("redirect", S3 only).
FILE_DOWNLOADS = os.environ.get("FILE_DOWNLOADS", "stream")
FILE_DOWNLOAD_URL_SECONDS = int(os.environ.get("FILE_DOWNLOAD_URL_SECONDS", "60"))
# How long the tracker keeps trying to store a finished job's outputs while the store is down.
STORAGE_RETRY_SECONDS = float(os.environ.get("STORAGE_RETRY_SECONDS", "120"))
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {
        "BACKEND": "assets.object_store.ObjectStore",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": AWS_S3_ENDPOINT_URL,
            "access_key": AWS_ACCESS_KEY_ID or None,  # None: boto3's own chain (an instance role, a profile)
            "secret_key": AWS_SECRET_ACCESS_KEY or None,
            "region_name": os.environ.get("AWS_S3_REGION_NAME", "") or None,
            "location": os.environ.get("AWS_LOCATION", ""),  # a key prefix, to share a bucket
            # Path style for MinIO, Ceph and moto; virtual-host style is AWS's default.
            "addressing_style": os.environ.get("AWS_S3_ADDRESSING_STYLE", "") or None,
            "signature_version": "s3v4",
            "default_acl": None,  # objects stay private: every download goes through the project
            "querystring_auth": True,
            "querystring_expire": FILE_DOWNLOAD_URL_SECONDS,
            "file_overwrite": True,  # every name is generated and unique: no HEAD before each PUT
        },
    }
# Outputs of a 40-minute video job can be large; the tracker streams them to storage in chunks.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE", str(5 * 1024 * 1024)))

# --- Redis: broker, channel layer -------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_DB = (urlsplit(REDIS_URL).path.strip("/") or "0").split("/")[0]

CHANNEL_LAYERS = {
    "default": {
        # The pub/sub layer: ~5k sends/s with nothing lost here, against ~1.2k/s and silent drops
        # for the default list-based layer (docs/HAZARDS.md). Progress is throttled per job anyway.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": None, "max_connections": 1000}],
            # The pub/sub layer ignores the Redis database number: without a prefix of their own, two
            # deployments on one Redis server would see each other's live updates (docs/HAZARDS.md).
            "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", f"asgi-{REDIS_DB}"),
        },
    }
}

# Shared by every process: per-user rate limits must count one user's requests across all of them.
CACHES = {
    "default": {
        "BACKEND": "access.redis_cache.SharedPoolRedisCache",  # one pool per process: access/redis_cache.py
        "LOCATION": os.environ.get("CACHE_URL", REDIS_URL),
        "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", f"ap-{REDIS_DB}"),
        "TIMEOUT": 300,
    }
}

# A web process's requests run their sync code (views, middleware) on this many kept threads, each
# keeping its database connection (access/request_threads.py); 0: a new thread per request, as Django
# does by itself (and so a new database connection per request).
WEB_SYNC_THREADS = int(os.environ.get("WEB_SYNC_THREADS", "8"))

# --- Celery --------------------------------------------------------------------------------------
# The longest job we allow, and the broker's redelivery timeout must be longer (docs/HAZARDS.md).
JOB_MAX_SECONDS = int(os.environ.get("JOB_MAX_SECONDS", str(60 * 60)))
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SOFT_TIME_LIMIT = JOB_MAX_SECONDS + 120
CELERY_TASK_TIME_LIMIT = JOB_MAX_SECONDS + 300
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": JOB_MAX_SECONDS + 600,
    # Jobs carry a priority; Redis emulates it with one list per step, highest first.
    "priority_steps": list(range(10)),
    "sep": ":",
    "queue_order_strategy": "priority",
    # Lets several deployments (or test runs) share one Redis without taking each other's tasks.
    "global_keyprefix": os.environ.get("CELERY_KEY_PREFIX", ""),
}
# Celery's Django fixup closes every database connection before and after each task unless this is
# set (a new PostgreSQL connection per task: ~8 ms between a job created and its prompt, in the wake
# task); anime_production/celery.py applies Django's own rule instead (CONN_MAX_AGE, health checks).
CELERY_DB_REUSE_MAX = 10**9
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE = {
    "backend-health-probe": {"task": "monitoring.tasks.backend_health_probe_all", "schedule": 30.0},
    # The statistics pages read roll-ups, not a million jobs: recompute the hours touched since last time.
    "stats-rollup-refresh": {"task": "monitoring.tasks.stats_rollup_refresh_task", "schedule": 60.0},
    "sweep-jobs": {"task": "jobs.tasks.sweep_jobs", "schedule": float(os.environ.get("SWEEP_SECONDS", "15"))},
    # Webhook messages whose retry is due and no countdown carries (long backoffs, lost tasks); old records.
    "webhook-sweep": {
        "task": "webhooks.tasks.webhook_sweep",
        "schedule": float(os.environ.get("WEBHOOK_SWEEP_SECONDS", "30")),
        "options": {"queue": "webhooks"},
    },
    "alerts-evaluate": {"task": "alerts.tasks.alerts_evaluate_task", "schedule": 60.0},
}

# --- ComfyUI backends ----------------------------------------------------------------------------
# COMFYUI_URL is the default backend. COMFYUI_BACKENDS adds named ones: "gpu1=http://h1:8188,gpu2=...".
# Backend URLs are set by administrators only: ComfyUI has no authentication (docs/HAZARDS.md).
COMFYUI_URL = os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188")
COMFYUI_BACKENDS: dict[str, str] = {}
if "COMFYUI_URL" in os.environ or not env_list("COMFYUI_BACKENDS"):
    COMFYUI_BACKENDS["default"] = COMFYUI_URL
for _entry in env_list("COMFYUI_BACKENDS"):
    _name, _, _url = _entry.partition("=")
    COMFYUI_BACKENDS[_name.strip()] = _url.strip()
COMFYUI_DEFAULT_BACKEND = os.environ.get("COMFYUI_DEFAULT_BACKEND", next(iter(COMFYUI_BACKENDS)))
# Labels a backend carries, which a job may require ("requires": ["video"]): space-separated per
# backend, "gpu1=vram:48g video,gpu2=vram:24g". Unlisted backends carry none.
COMFYUI_BACKEND_LABELS: dict[str, list[str]] = {}
for _entry in env_list("COMFYUI_BACKEND_LABELS"):
    _name, _, _labels = _entry.partition("=")
    COMFYUI_BACKEND_LABELS[_name.strip()] = sorted(set(_labels.split()))
# Fair share within a priority: the GPUs go round the users ("user") or the jobs' projects ("project").
FAIR_SHARE_BY = os.environ.get("FAIR_SHARE_BY", "user")
COMFYUI_HTTP_TIMEOUT = float(os.environ.get("COMFYUI_HTTP_TIMEOUT", "10"))
COMFYUI_WS_TIMEOUT = float(os.environ.get("COMFYUI_WS_TIMEOUT", "1.0"))

# --- Tracking ------------------------------------------------------------------------------------
# Coalescing: at most one database write and one broadcast per job per interval.
TRACKER_DB_INTERVAL = float(os.environ.get("TRACKER_DB_INTERVAL", "0.6"))
TRACKER_BROADCAST_INTERVAL = float(os.environ.get("TRACKER_BROADCAST_INTERVAL", "0.12"))
# ...and its progress to the job lists (ws/jobs/) at most this often: jobs.broadcast.ListPacer.
TRACKER_LIST_BROADCAST_INTERVAL = float(os.environ.get("TRACKER_LIST_BROADCAST_INTERVAL", "0.5"))
# A backend's next prompt goes into ComfyUI's own queue this long before the running one is expected
# to end (by its own pace: jobs.eta.remaining_seconds), so the GPU goes from one prompt to the next without
# waiting for us; 0: only once ComfyUI is done with it (jobs/tracking/shift.py).
HANDOVER_AHEAD_SECONDS = float(os.environ.get("HANDOVER_AHEAD_SECONDS", "2.0"))
# A GPU worker with nothing left to run waits this long for the next job's wake before its task ends
# (jobs.tracking.backend_work): a job made meanwhile goes in without the broker's round trip; 0: none.
GPU_WORKER_LINGER_SECONDS = float(os.environ.get("GPU_WORKER_LINGER_SECONDS", "2.0"))
# How long ComfyUI may stay unreachable before the attempt fails `comfyui_unreachable`.
TRACKER_RECONNECT_SECONDS = float(os.environ.get("TRACKER_RECONNECT_SECONDS", "60"))
# Live previews are kept at most this often; step samples go on the timeline at most this often.
TRACKER_PREVIEW_INTERVAL = float(os.environ.get("TRACKER_PREVIEW_INTERVAL", "1.0"))
TRACKER_STEP_SAMPLE_SECONDS = float(os.environ.get("TRACKER_STEP_SAMPLE_SECONDS", "2.0"))
# What ComfyUI sends is untrusted: how much of it is kept. An output larger than JOB_OUTPUT_MAX_BYTES
# (default sized for a 40-minute video) is not stored, and outputs past JOB_MAX_OUTPUTS are skipped;
# the timeline names both. Errors keep this many characters of message and traceback, and their other
# details (ComfyUI's node_errors) this many bytes of JSON.
JOB_OUTPUT_MAX_BYTES = int(os.environ.get("JOB_OUTPUT_MAX_BYTES", str(8 * 1024**3)))
JOB_MAX_OUTPUTS = int(os.environ.get("JOB_MAX_OUTPUTS", "200"))
JOB_ERROR_MESSAGE_MAX_CHARS = int(os.environ.get("JOB_ERROR_MESSAGE_MAX_CHARS", "4000"))
JOB_ERROR_TRACEBACK_MAX_CHARS = int(os.environ.get("JOB_ERROR_TRACEBACK_MAX_CHARS", str(64 * 1024)))
JOB_ERROR_DETAILS_MAX_BYTES = int(os.environ.get("JOB_ERROR_DETAILS_MAX_BYTES", str(64 * 1024)))
# Thumbnails of raster-image outputs (jobs/thumbnails.py): this many pixels on the longest side, made
# only of an image whose header claims at most JOB_THUMBNAIL_MAX_PIXELS (8K UHD is 33 MP) and whose
# file is at most JOB_THUMBNAIL_MAX_BYTES: decoding is the tracker's time, and the file is untrusted.
JOB_THUMBNAIL_SIZE = int(os.environ.get("JOB_THUMBNAIL_SIZE", "160"))
JOB_THUMBNAIL_MAX_PIXELS = int(os.environ.get("JOB_THUMBNAIL_MAX_PIXELS", str(40_000_000)))
JOB_THUMBNAIL_MAX_BYTES = int(os.environ.get("JOB_THUMBNAIL_MAX_BYTES", str(256 * 1024**2)))

# --- Failures, retries, sweeps -------------------------------------------------------------------
JOB_MAX_ATTEMPTS = int(os.environ.get("JOB_MAX_ATTEMPTS", "3"))
# How many times each category may be retried automatically; absent categories never are.
JOB_RETRY_LIMITS = {
    "comfyui_unreachable": JOB_MAX_ATTEMPTS,
    "lost": JOB_MAX_ATTEMPTS,
    "worker_lost": JOB_MAX_ATTEMPTS,
    "stuck": JOB_MAX_ATTEMPTS,
    "out_of_memory": int(os.environ.get("JOB_OOM_RETRIES", "1")),
}
JOB_RETRY_BACKOFF_SECONDS = float(os.environ.get("JOB_RETRY_BACKOFF_SECONDS", "5"))
JOB_RETRY_BACKOFF_MAX = float(os.environ.get("JOB_RETRY_BACKOFF_MAX", "300"))
# Stuck: no progress for longer than max(floor, factor x the usual duration of the current node).
JOB_STUCK_FLOOR_SECONDS = float(os.environ.get("JOB_STUCK_FLOOR_SECONDS", "600"))
JOB_STUCK_FACTOR = float(os.environ.get("JOB_STUCK_FACTOR", "5"))
JOB_WAIT_FLAG_SECONDS = float(os.environ.get("JOB_WAIT_FLAG_SECONDS", "1800"))
# A tracker that has not written its heartbeat for this long is presumed dead.
TRACKER_STALE_SECONDS = float(os.environ.get("TRACKER_STALE_SECONDS", "20"))
# The fleet's queue is announced to waiting jobs' subscribers (their places and ETAs) by the default
# worker, at most once per this many seconds however often it moves (jobs.services.queue_announce_soon).
QUEUE_ANNOUNCE_INTERVAL = float(os.environ.get("QUEUE_ANNOUNCE_INTERVAL", "0.5"))

# --- Workflow bounds: a workflow is code (docs/HAZARDS.md) -------------------------------------------
WORKFLOW_MAX_BYTES = int(os.environ.get("WORKFLOW_MAX_BYTES", str(2 * 1024 * 1024)))
WORKFLOW_MAX_NODES = int(os.environ.get("WORKFLOW_MAX_NODES", "500"))
WORKFLOW_MAX_STEPS = int(os.environ.get("WORKFLOW_MAX_STEPS", "200"))
WORKFLOW_MAX_PIXELS = int(os.environ.get("WORKFLOW_MAX_PIXELS", str(4096 * 4096)))
WORKFLOW_MAX_FRAMES = int(os.environ.get("WORKFLOW_MAX_FRAMES", "2000"))
WORKFLOW_MAX_BATCH = int(os.environ.get("WORKFLOW_MAX_BATCH", "64"))
# Node classes, comma-separated: a non-empty allow-list admits only its classes; the deny-list refuses
# its classes whatever else is allowed (e.g. custom nodes that run code or write outside ComfyUI).
WORKFLOW_NODE_CLASSES_ALLOWED = env_list("WORKFLOW_NODE_CLASSES_ALLOWED")
WORKFLOW_NODE_CLASSES_DENIED = env_list("WORKFLOW_NODE_CLASSES_DENIED")

JOB_TYPES = env_list("JOB_TYPES", "image,video,upscale,other")
# Free tags on a job or a group of jobs (each at most 64 characters): how many.
JOB_MAX_TAGS = int(os.environ.get("JOB_MAX_TAGS", "20"))
# Jobs in one shot pipeline (POST /api/pipelines/): one request makes them all, in one transaction.
PIPELINE_MAX_JOBS = int(os.environ.get("PIPELINE_MAX_JOBS", "100"))

# --- Workflow templates: published workflows with typed inputs, run one job at a time or as a batch ---
# Jobs in one batch (`{"batch": [...]}`): one request makes them all, in one transaction.
TEMPLATE_BATCH_MAX = int(os.environ.get("TEMPLATE_BATCH_MAX", "100"))

# --- Quotas: per-user limits (quotas/, README "Quotas and fair share") ------------------------------
# Defaults for every user; unset or empty = unlimited. A user's UserQuota row (admin) overrides them.
# Running: jobs on a GPU at once (held back at dispatch); waiting: queued or blocked jobs at once;
# GPU-seconds: run time of the jobs started since 00:00 UTC. QUOTA_OVER_LIMIT: "reject" answers a
# submission over a limit with 429, "wait" accepts it and the job waits (for a GPU-second budget: until
# 00:00 UTC). Numbers that do not parse are kept as text for quotas.checks to refuse at start.
QUOTA_MAX_RUNNING_JOBS = env_limit("QUOTA_MAX_RUNNING_JOBS")
QUOTA_MAX_WAITING_JOBS = env_limit("QUOTA_MAX_WAITING_JOBS")
QUOTA_GPU_SECONDS_PER_DAY = env_limit("QUOTA_GPU_SECONDS_PER_DAY")
QUOTA_OVER_LIMIT = os.environ.get("QUOTA_OVER_LIMIT", "reject").strip().lower()

# --- Input assets: files users upload for their workflows (keyframes, poses, masks, clips, audio) ---
# ComfyUI refuses uploads past its --max-upload-size (100 MB by default): keep ASSET_MAX_BYTES within it.
ASSET_MAX_BYTES = int(os.environ.get("ASSET_MAX_BYTES", str(100 * 1024 * 1024)))
# Per image or video frame; frames of an animation or video; seconds of a video or audio file.
ASSET_MAX_PIXELS = int(os.environ.get("ASSET_MAX_PIXELS", str(4096 * 4096)))
ASSET_MAX_FRAMES = int(os.environ.get("ASSET_MAX_FRAMES", "2000"))
ASSET_MAX_SECONDS = float(os.environ.get("ASSET_MAX_SECONDS", "600"))
# Per user: how many assets and how many bytes in all.
ASSET_MAX_PER_USER = int(os.environ.get("ASSET_MAX_PER_USER", "1000"))
ASSET_MAX_BYTES_PER_USER = int(os.environ.get("ASSET_MAX_BYTES_PER_USER", str(10 * 1024**3)))

# --- Webhooks: signed callbacks of job events and alerts, sent from their own Celery queue ------------
# Hosts (names or addresses) that webhooks may reach although they are loopback or private; no others.
WEBHOOK_ALLOWED_HOSTS = env_list("WEBHOOK_ALLOWED_HOSTS")
WEBHOOK_MAX_PER_USER = int(os.environ.get("WEBHOOK_MAX_PER_USER", "20"))
# job.progress: at most one per job per this many seconds.
WEBHOOK_PROGRESS_SECONDS = float(os.environ.get("WEBHOOK_PROGRESS_SECONDS", "10"))
WEBHOOK_CONNECT_TIMEOUT = float(os.environ.get("WEBHOOK_CONNECT_TIMEOUT", "5"))
WEBHOOK_READ_TIMEOUT = float(os.environ.get("WEBHOOK_READ_TIMEOUT", "10"))
WEBHOOK_RESPONSE_MAX_BYTES = int(os.environ.get("WEBHOOK_RESPONSE_MAX_BYTES", "2048"))
# A failed delivery is retried after 30 s, 1 min, 2 min, ... at most an hour apart, for a day at most.
WEBHOOK_RETRY_BASE_SECONDS = float(os.environ.get("WEBHOOK_RETRY_BASE_SECONDS", "30"))
WEBHOOK_RETRY_MAX_DELAY_SECONDS = float(os.environ.get("WEBHOOK_RETRY_MAX_DELAY_SECONDS", "3600"))
WEBHOOK_RETRY_FOR_SECONDS = float(os.environ.get("WEBHOOK_RETRY_FOR_SECONDS", str(24 * 3600)))
# After a rotation the old secret signs alongside the new one this long.
WEBHOOK_SECRET_GRACE_SECONDS = float(os.environ.get("WEBHOOK_SECRET_GRACE_SECONDS", str(24 * 3600)))
WEBHOOK_RETENTION_DAYS = int(os.environ.get("WEBHOOK_RETENTION_DAYS", "30"))
# Where receivers reach this server: the base of the links in payloads.
WEBHOOK_PUBLIC_URL = os.environ.get("WEBHOOK_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
WEBHOOK_WORKER_CONCURRENCY = int(os.environ.get("WEBHOOK_WORKER_CONCURRENCY", "4"))

# --- Alerts (alert.* webhook events), checked every minute; 0 turns a rule off ------------------------
# A backend's failure rate: at least PERCENT % of the jobs it finished in the last MINUTES failed,
# out of at least MIN_JOBS.
ALERT_FAILURE_RATE_PERCENT = float(os.environ.get("ALERT_FAILURE_RATE_PERCENT", "50"))
ALERT_FAILURE_RATE_MINUTES = float(os.environ.get("ALERT_FAILURE_RATE_MINUTES", "15"))
ALERT_FAILURE_RATE_MIN_JOBS = int(os.environ.get("ALERT_FAILURE_RATE_MIN_JOBS", "5"))
# A backend none of whose health probes succeeded in this many minutes.
ALERT_UNREACHABLE_MINUTES = float(os.environ.get("ALERT_UNREACHABLE_MINUTES", "3"))
# A backend with a job waiting longer than this many minutes.
ALERT_JOB_WAIT_MINUTES = float(os.environ.get("ALERT_JOB_WAIT_MINUTES", "30"))

# --- Prometheus metrics at /metrics (metrics/, README "Metrics") -------------------------------------
# Who may scrape: a bearer token (Authorization: Bearer <token>), client networks (comma-separated
# addresses or CIDRs, matched against the connecting address), or both (then both must pass). Neither
# set: /metrics answers 404.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "").strip()
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS")
# The database's part of a scrape (jobs by state, queues, backend health) is read at most this often per process.
METRICS_CACHE_SECONDS = float(os.environ.get("METRICS_CACHE_SECONDS", "5"))
# What a scrape sums: every process's files in this directory and in its subdirectories; containers
# sharing it as a volume each write to a directory of their own, named after their host name (pids
# repeat across containers, and two processes with one pid would write one file).
METRICS_MULTIPROC_ROOT = os.environ.get("METRICS_MULTIPROC_ROOT", "")
# Where this process keeps its counters and histograms (prometheus-client reads the same variable when
# it is imported: the metrics app sets it from here first); run_system sets and empties it. Unset, and
# no root: this process's own only.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or (
    str(Path(METRICS_MULTIPROC_ROOT) / socket.gethostname()) if METRICS_MULTIPROC_ROOT else ""
)

# --- API keys: hashed at rest, expiring, several named keys per user --------------------------------
API_KEY_DAYS = int(os.environ.get("API_KEY_DAYS", "90"))
# How long one web process trusts a key it checked, for websocket handshakes only (access.keys.
# RecentKeyUsers): a key revoked elsewhere opens no new socket after this many seconds.
API_KEY_RECENT_SECONDS = float(os.environ.get("API_KEY_RECENT_SECONDS", "10"))
API_KEY_MAX_DAYS = int(os.environ.get("API_KEY_MAX_DAYS", "365"))
API_KEYS_PER_USER = int(os.environ.get("API_KEYS_PER_USER", "20"))

# --- REST ----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PARSER_CLASSES": [
        "access.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # One user's scripts must not slow everyone else down: 429 with Retry-After past these rates,
    # counted atomically in Redis (access/throttles.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "access.throttles.AnonRateThrottle",
        "access.throttles.UserRateThrottle",
        "access.throttles.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("THROTTLE_ANON", "60/min"),
        "user": os.environ.get("THROTTLE_USER", "1200/min"),
        "submit": os.environ.get("THROTTLE_SUBMIT", "120/min"),
        "upload": os.environ.get("THROTTLE_UPLOAD", "60/min"),
    },
    "DEFAULT_SCHEMA_CLASS": "access.openapi.ProjectAutoSchema",
}
# The OpenAPI schema (/api/schema/, access/docs.py) and its docs page (/api/docs/: Swagger UI from
# our own static files, drf-spectacular-sidecar). The overview and the websockets: jobs/openapi.py.
SPECTACULAR_SETTINGS = {
    "TITLE": "anime-production API",
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": "/api/",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Bodies are documented as JSON (the API's contract; form encodings are there for DRF's browsable
    # pages); an upload says multipart itself.
    "PARSER_WHITELIST": ["access.parsers.BoundedJSONParser"],
    # Choice sets that share a field name get names of their own (else a hash-suffixed one, and a warning).
    "ENUM_NAME_OVERRIDES": {
        "WebhookEventEnum": "webhooks.events.EVENTS",
        "JobWebhookEventEnum": "webhooks.events.JOB_EVENTS",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "jobs.openapi.add_websocket_messages",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge fetched from the validator's own site: the page loads nothing from another origin.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}
# Websockets: single-use tickets (POST /api/ws-tickets/) live this long; an API key in the URL
# (`?token=`) is refused unless allowed here (URLs end up in logs, histories and proxies).
WS_TICKET_SECONDS = int(os.environ.get("WS_TICKET_SECONDS", "30"))
WS_ALLOW_TOKEN_IN_URL = env_bool("WS_ALLOW_TOKEN_IN_URL", False)
# A workflow is a few levels deep; nothing a client sends legitimately nests deeper than this.
JSON_MAX_DEPTH = int(os.environ.get("JSON_MAX_DEPTH", "64"))
# Websocket connections a user may open per minute (checked at the handshake).
WS_CONNECTS_PER_MINUTE = int(os.environ.get("WS_CONNECTS_PER_MINUTE", "120"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # No ticket or API key from a URL reaches a log line (access/access_log.py).
    "filters": {"redact_url_credentials": {"()": "access.access_log.RedactUrlCredentials"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_url_credentials"]}
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
