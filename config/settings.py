"""One settings module, configured from the environment (see .env.example)."""

import os
from pathlib import Path

import dj_database_url

from config.env import env_bool, env_float, env_int, env_list, env_str, secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

# HF_HUB_OFFLINE: when unset, clipmodel decides it with a short probe of the model hub before open_clip is
# imported (clipmodel/hub.py): online, named weights download; offline, a missing weight fails within seconds.

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = secret_key(path=VAR_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "studyapp",
    "evaluator",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "studyapp.middleware.ParticipantLanguageMiddleware",
    "studyapp.middleware.SecurityHeadersMiddleware",
    "studyapp.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0),
        # A persistent connection that died with a database restart is replaced before the request
        # uses it, instead of costing that request a 503.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let web workers and Celery share the file without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not :memory:) so that live-server threads and worker subprocesses share it; one per
    # test process so that concurrent runs never clobber each other.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test_db_{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Shared by every web worker through the database (created by `manage.py createcachetable`).
    # MAX_ENTRIES: the default (300) culls a third of the counters once a launch brings more addresses.
    "ratelimit": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "ratelimit_cache",
                  "OPTIONS": {"MAX_ENTRIES": 100_000}},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
# Participant pages speak their study's language (Study.language; studyapp/locale). The admin stays in English.
LANGUAGES = [("en", "English"), ("ko", "Korean")]
# The participant pages' catalogues; `manage.py makemessages` from the checkout's root writes here.
LOCALE_PATHS = [BASE_DIR / "studyapp" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# Item images are never served from MEDIA_URL: participants get them through opaque,
# ownership-checked views (studyapp.views), so no URL or filename can reveal a label.
MEDIA_URL = "/media-not-served/"
# Behind nginx or Caddy: the ownership-checked image views answer with an X-Accel-Redirect to this internal
# prefix + the image's path under MEDIA_ROOT, and the proxy sends the file (docs/deploy.md). Empty: Python
# sends the bytes (./run demo, no proxy).
IMAGES_ACCEL_REDIRECT = env_str("IMAGES_ACCEL_REDIRECT", "")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Security. HTTPS=1 turns on what only makes sense behind TLS; `check --deploy` is clean with
# DEBUG=0 HTTPS=1 and a real SECRET_KEY.
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
# Exactly one trusted reverse proxy in front: it says whether the request came over TLS, and it
# appends the client's address to X-Forwarded-For (the join rate limit counts per client address).
BEHIND_PROXY = env_bool("BEHIND_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=1024)


# Study behaviour
PARTICIPANT_URL_PREFIX = "/s/"
STUDY_IMAGE_MAX_SIDE = env_int("STUDY_IMAGE_MAX_SIDE", 512, minimum=64)
STUDY_IMAGE_MIN_SIDE = env_int("STUDY_IMAGE_MIN_SIDE", 32, minimum=1)
STUDY_IMAGE_MAX_PIXELS = env_int("STUDY_IMAGE_MAX_PIXELS", 40_000_000, minimum=1)
STUDY_JOIN_RATE_PER_MINUTE = env_int("STUDY_JOIN_RATE_PER_MINUTE", 120, minimum=1)
# Folders the admin's "Import a dataset" may read (comma-separated); empty: any path the web process
# can read, which suits one researcher on their own machine, not a shared server.
ADMIN_IMPORT_ROOTS = env_list("ADMIN_IMPORT_ROOTS", [])
# Failed admin logins from one address within 15 minutes before its logins are refused unchecked.
ADMIN_LOGIN_MAX_FAILURES = env_int("ADMIN_LOGIN_MAX_FAILURES", 10, minimum=1)

DEMO_DATA = env_str("DEMO_DATA", "")

# Model scoring: the evaluator's Celery workers and the services that queue their work. Workers read the same
# settings, so each worker machine can be tuned through its environment.
HUMANCLIP_CACHE = Path(env_str("HUMANCLIP_CACHE", str(Path.home() / ".cache" / "humanclip")))
SCORING_QUEUE = env_str("SCORING_QUEUE", "scoring") or "scoring"
# Items per task (each scored in every condition); keep it >= SCORING_BATCH_SIZE, images per forward pass.
SCORING_CHUNK_SIZE = env_int("SCORING_CHUNK_SIZE", 128, minimum=1)
SCORING_BATCH_SIZE = env_int("SCORING_BATCH_SIZE", 128, minimum=1)
# Seconds without a heartbeat before a RUNNING chunk counts as orphaned (its worker died) and is requeued.
# Heartbeats come at every phase and every encoded batch, so this only needs to exceed one batch's time.
SCORING_STALE_S = env_float("SCORING_STALE_S", 300, minimum=0.1)
# How often each worker's sweeper looks for orphaned chunks, lost messages and finished runs.
SCORING_SWEEP_S = env_float("SCORING_SWEEP_S", 30, minimum=0.1)
# A pending chunk whose message is not in the (empty) queue this long after it was sent is re-sent.
SCORING_REQUEUE_GRACE_S = env_float("SCORING_REQUEUE_GRACE_S", 60, minimum=0)
# Per-chunk time limits (prefork pool only; the solo pool cannot interrupt a task).
SCORING_SOFT_TIME_LIMIT_S = env_int("SCORING_SOFT_TIME_LIMIT_S", 900, minimum=1)
SCORING_TIME_LIMIT_S = env_int("SCORING_TIME_LIMIT_S", 960, minimum=1)
# Redis redelivers a message not acknowledged this long after delivery. It must exceed the longest chunk, or a
# still-running chunk's message is delivered a second time (harmless, the claim skips it, but wasted work); a
# killed worker's chunk is recovered sooner by the sweeper (evaluator.services.recovery), not by this timeout.
SCORING_VISIBILITY_TIMEOUT_S = env_int("SCORING_VISIBILITY_TIMEOUT_S", 3600, minimum=1)
# A planning simulation heartbeats after every grid size; one size of a large design can take minutes, so a
# running plan counts as abandoned (its worker died) only after this long without one.
PLANNING_STALE_S = env_float("PLANNING_STALE_S", 600, minimum=0.1)
# The dashboard's live precision (a bootstrap over the answers so far) is recomputed at most this often.
DASHBOARD_LIVE_CACHE_S = env_float("DASHBOARD_LIVE_CACHE_S", 60, minimum=0)

# Celery (evaluator.celery_app reads the CELERY_* names; its fixed reliability options live there).
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6390/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ROUTES = {"evaluator.*": {"queue": SCORING_QUEUE}}
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": SCORING_VISIBILITY_TIMEOUT_S,
    "socket_connect_timeout": 5,
    "socket_timeout": 10,
    "socket_keepalive": True,
    # A consumer whose Redis died or restarted while it was busy can sit on the dead BRPOP connection for
    # brpop_timeout + 2 x this (51 s with kombu's default of 25); 5 s brings it back within ~11 s.
    "health_check_interval": 5,
    "retry_on_timeout": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
