"""Settings for chatsite, read from the environment (12-factor).

Every variable is documented in the README. With no environment at all the project runs as a
development server on SQLite with an in-memory channel layer and the offline demo model.
"""

import os
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

# Generic Django classes (ModelAdmin[Conversation], QuerySet[...]) subscriptable at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


DEBUG = env_bool("DJANGO_DEBUG", False)

_DEV_SECRET_KEY = "django-insecure-chatsite-development-only"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _DEV_SECRET_KEY
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off: refusing to run production "
        "with the development secret."
    )

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get(
        "DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else ""
    ).split(",")
    if host.strip()
]
CSRF_TRUSTED_ORIGINS = [
    origin.strip()
    for origin in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",")
    if origin.strip()
]
# Websocket origins accepted besides the site's own (scheme://host[:port]); CSRF_TRUSTED_ORIGINS
# are accepted too. Everything else, a missing Origin included, is refused.
CHAT_ALLOWED_ORIGINS = [
    origin.strip()
    for origin in os.environ.get("CHAT_ALLOWED_ORIGINS", "").split(",")
    if origin.strip()
]
# Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or networks): the
# reverse proxy in front of Daphne. Loopback by default, as in the operations guide.
CHAT_TRUSTED_PROXIES = [
    entry.strip()
    for entry in os.environ.get("CHAT_TRUSTED_PROXIES", "127.0.0.1,::1").split(",")
    if entry.strip()
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "chatsite.middleware.content_security_policy",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

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
                "conversations.chat.context_processors.chat",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
# PostgreSQL: a pool of connections (psycopg-pool) for the threads that run ORM work, so turn
# starts and saves from many sockets can run side by side (CHAT_ORM_THREADS threads; see
# conversations/chat/orm.py). A pooled connection goes back to the pool after each call, so
# CONN_MAX_AGE does not apply to it. 0 = no pool, a connection per thread as before.
DATABASE_POOL_MAX = env_int("DATABASE_POOL_MAX", 20)
# Turn starts are mostly Python work, which one process runs on one core (the GIL) however
# many threads it has. Many threads share the GIL with the event loop in a burst of sends:
# the turn starts all end sooner (the last first token comes sooner), at the cost of the first
# ones, whose replies wait with the rest. Two threads do the opposite. Measured in
# bench/REPORT.md (round 5): eight won at every burst size for the slowest first token.
CHAT_ORM_THREADS = env_int("CHAT_ORM_THREADS", 8)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_MAX > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, DATABASE_POOL_MAX),
        "max_size": DATABASE_POOL_MAX,
        # Longer than any turn start should wait for a connection; then it fails visibly.
        "timeout": 20,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Bounds on a database that stops answering (docs/operations.md): connecting, a statement
    # the server takes too long over, and keepalives that notice a peer gone from the network.
    # A connection that is silently dropped is bounded by CHAT_DB_STALL_SECONDS for saves.
    _pg_options = DATABASES["default"].setdefault("OPTIONS", {})
    _pg_options.setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 10))
    _statement_ms = env_int("DATABASE_STATEMENT_TIMEOUT_MS", 60_000)
    if _statement_ms > 0 and "options" not in _pg_options:
        _pg_options["options"] = f"-c statement_timeout={_statement_ms}"
    _pg_options.setdefault("keepalives", 1)
    _pg_options.setdefault("keepalives_idle", 30)
    _pg_options.setdefault("keepalives_interval", 10)
    _pg_options.setdefault("keepalives_count", 3)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Browser tests run the app in a separate Daphne process, which must see the test database:
    # an in-memory SQLite database would be private to the test process.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # Seconds a writer waits for the lock before giving up (SQLite's busy timeout).
            "timeout": env_int("SQLITE_BUSY_TIMEOUT", 20),
            # A transaction that reads, then writes, cannot wait for the lock once it has read
            # (SQLite fails it at once): taking the write lock at BEGIN makes writers queue.
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chatsite.layers.LocalFirstRedisChannelLayer",
            "CONFIG": {
                # redis-py 8 times socket reads out after 5 s by default, exactly as long as
                # channels_redis blocks in BZPOPMIN: without more room, receives fail at random.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "prefix": os.environ.get("CHANNELS_REDIS_PREFIX", "chatsite"),
                # Per process, not per socket: every socket of a process shares one Redis queue.
                "capacity": env_int("CHANNELS_REDIS_CAPACITY", 1000),
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "chatsite.layers.FastInMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The sign-in throttle lives in the backend, so every sign-in form goes through it. Django's
# own backend stays listed only so that sessions signed in before it was added stay valid: it
# is asked after the throttled one, which has already refused (PermissionDenied stops the
# search) or failed the same credentials, so it can never let in what the throttle kept out.
AUTHENTICATION_BACKENDS = [
    "conversations.accounts.backends.ThrottledModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Uploaded attachments. Never served from a public media URL: an authenticated view checks
# who may read each file. Local files by default; any S3-compatible bucket when
# CHAT_S3_BUCKET is set (README, "Attachments").
MEDIA_ROOT = Path(os.environ.get("CHAT_MEDIA_ROOT") or BASE_DIR / "media")
CHAT_S3_BUCKET = os.environ.get("CHAT_S3_BUCKET", "")
if CHAT_S3_BUCKET:
    _default_storage: dict[str, object] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": CHAT_S3_BUCKET,
            "endpoint_url": os.environ.get("CHAT_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("CHAT_S3_REGION") or None,
            "access_key": os.environ.get("CHAT_S3_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("CHAT_S3_SECRET_ACCESS_KEY") or None,
            "location": os.environ.get("CHAT_S3_PREFIX", ""),
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": True,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT, "base_url": None},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Security: sessions and CSRF cookies are HttpOnly/SameSite=Lax everywhere, Secure in production.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
# No SECURE_PROXY_SSL_HEADER: chatsite.proxy sets the scheme from X-Forwarded-Proto, and only
# when a trusted proxy sent it.

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# The chat itself.
AIMLAPI_API_KEY = os.environ.get("AIMLAPI_API_KEY", "")
AIMLAPI_BASE_URL = os.environ.get("AIMLAPI_BASE_URL", "https://api.aimlapi.com/v1")
CHAT_MODEL = os.environ.get("CHAT_MODEL", "anthropic/claude-sonnet-4.5")
CHAT_REQUEST_STYLE = os.environ.get("CHAT_REQUEST_STYLE", "openai")
# Models: a retired model's turns go to its replacement, or to this one (blank: none named).
CHAT_FALLBACK_MODEL = os.environ.get("CHAT_FALLBACK_MODEL", "")
# The operator's model profiles (JSON, see the README); they win over built-ins and the gateway.
CHAT_MODELS_FILE = os.environ.get("CHAT_MODELS_FILE", "")
# How old the gateway's models list may get before a background refresh (0: never fetch).
CHAT_MODELS_REFRESH_SECONDS = env_float("CHAT_MODELS_REFRESH_SECONDS", 3600.0)
CHAT_MODELS_FETCH_TIMEOUT = env_float("CHAT_MODELS_FETCH_TIMEOUT", 5.0)
# The page warns this many days before a model's shutdown date.
CHAT_RETIREMENT_NOTICE_DAYS = env_int("CHAT_RETIREMENT_NOTICE_DAYS", 14)
CHAT_ALLOW_SIGNUP = env_bool("CHAT_ALLOW_SIGNUP", True)
CHAT_UPSTREAM_TIMEOUT = env_float("CHAT_UPSTREAM_TIMEOUT", 60.0)
CHAT_UPSTREAM_CONNECT_TIMEOUT = env_float("CHAT_UPSTREAM_CONNECT_TIMEOUT", 10.0)
CHAT_UPSTREAM_MAX_ATTEMPTS = env_int("CHAT_UPSTREAM_MAX_ATTEMPTS", 3)
CHAT_UPSTREAM_BACKOFF_BASE = env_float("CHAT_UPSTREAM_BACKOFF_BASE", 1.0)
CHAT_DEMO_TOKEN_DELAY = env_float("CHAT_DEMO_TOKEN_DELAY", 0.03)
CHAT_FLUSH_INTERVAL = env_float("CHAT_FLUSH_INTERVAL", 0.05)
# Under load the interval stretches so that one process sends at most this many deltas a
# second across all its replies, but never beyond CHAT_FLUSH_INTERVAL_MAX (bench/REPORT.md).
CHAT_FRAMES_PER_SECOND = env_float("CHAT_FRAMES_PER_SECOND", 2000.0)
CHAT_FLUSH_INTERVAL_MAX = env_float("CHAT_FLUSH_INTERVAL_MAX", 0.15)
CHAT_CHECKPOINT_INTERVAL = env_float("CHAT_CHECKPOINT_INTERVAL", 1.0)
# While the database is away, checkpoints and the final save of a reply are retried this long
# (the text stays in memory); a finished reply still unsaved then goes to the local spool.
CHAT_SAVE_RETRY_SECONDS = env_float("CHAT_SAVE_RETRY_SECONDS", 60.0)
# One save (a checkpoint, the final save) that the database has not answered within this many
# seconds counts as failed: its connection is shut and the save retried (then spooled).
CHAT_DB_STALL_SECONDS = env_float("CHAT_DB_STALL_SECONDS", 30.0)
CHAT_SPOOL_DIR = os.environ.get("CHAT_SPOOL_DIR") or str(BASE_DIR / "var" / "spool")
# A reply still streaming after this long ends with an error (its text kept).
CHAT_REPLY_MAX_SECONDS = env_float("CHAT_REPLY_MAX_SECONDS", 600.0)
# How often a streaming reply is re-rendered as Markdown for the page (seconds, at least).
CHAT_RENDER_INTERVAL = env_float("CHAT_RENDER_INTERVAL", 0.3)
# Markdown renders of streaming replies per second, across all replies of one process: with
# more replies streaming, each is re-rendered less often (bench/REPORT.md).
CHAT_RENDERS_PER_SECOND = env_float("CHAT_RENDERS_PER_SECOND", 20.0)
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 100_000)
# The largest websocket message the server sends. Daphne refuses (and closes the socket on) any
# message over its --websocket-max-message-size, 1 MiB unless changed: keep this at or below it.
CHAT_WS_FRAME_MAX_BYTES = env_int("CHAT_WS_FRAME_MAX_BYTES", 1024 * 1024)
# A reply longer than this many characters is shown in windows of this size (plain text, the
# rest a click or a download away), so a multi-megabyte reply neither freezes the page nor
# outgrows a socket frame. Never below the longest message a user may send.
CHAT_MESSAGE_WINDOW_CHARS = max(
    env_int("CHAT_MESSAGE_WINDOW_CHARS", 100_000), CHAT_MAX_MESSAGE_CHARS
)
CHAT_DEFAULT_MAX_TOKENS = env_int("CHAT_DEFAULT_MAX_TOKENS", 4096)

# Attachments. Defaults follow Claude's documented limits: a request at most 32 MB, up to 100
# images, PDFs up to 32 MB and 100 pages; images are downscaled to 1568 px on the long edge
# (what Claude would do anyway, so larger ones only cost tokens).
CHAT_ATTACHMENT_MAX_FILE_BYTES = env_int("CHAT_ATTACHMENT_MAX_FILE_BYTES", 32 * 1024 * 1024)
CHAT_ATTACHMENT_MAX_TEXT_BYTES = env_int("CHAT_ATTACHMENT_MAX_TEXT_BYTES", 512 * 1024)
CHAT_ATTACHMENT_IMAGE_MAX_EDGE = env_int("CHAT_ATTACHMENT_IMAGE_MAX_EDGE", 1568)
# Larger images are refused rather than decoded (decompression-bomb guard).
CHAT_ATTACHMENT_IMAGE_MAX_PIXELS = env_int("CHAT_ATTACHMENT_IMAGE_MAX_PIXELS", 8000 * 8000)
CHAT_ATTACHMENT_PDF_MAX_PAGES = env_int("CHAT_ATTACHMENT_PDF_MAX_PAGES", 100)
CHAT_ATTACHMENT_MAX_PER_MESSAGE = env_int("CHAT_ATTACHMENT_MAX_PER_MESSAGE", 20)
CHAT_ATTACHMENT_MAX_BYTES_PER_MESSAGE = env_int(
    "CHAT_ATTACHMENT_MAX_BYTES_PER_MESSAGE", 32 * 1024 * 1024
)
# Across the whole request (earlier turns' attachments are sent again), counted as sent:
# base64, a third larger than the files.
CHAT_ATTACHMENT_MAX_PER_REQUEST = env_int("CHAT_ATTACHMENT_MAX_PER_REQUEST", 100)
CHAT_ATTACHMENT_MAX_BYTES_PER_REQUEST = env_int(
    "CHAT_ATTACHMENT_MAX_BYTES_PER_REQUEST", 32 * 1024 * 1024
)
CHAT_ATTACHMENT_QUOTA_BYTES = env_int("CHAT_ATTACHMENT_QUOTA_BYTES", 1024 * 1024 * 1024)
# Images more than this many user turns back are left out of the request (0: always sent).
CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS = env_int("CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS", 0)
# Uploads never sent with a message are removed after this long.
CHAT_ATTACHMENT_UNSENT_TTL_HOURS = env_int("CHAT_ATTACHMENT_UNSENT_TTL_HOURS", 24)

# Admin review: staff must type why they open a transcript; it goes into the access log.
CHAT_REVIEW_REASON_REQUIRED = env_bool("CHAT_REVIEW_REASON_REQUIRED", True)
# Limits and quotas (0 = no limit); staff can override them per user in the admin.
CHAT_RATE_LIMIT_PER_MINUTE = env_int("CHAT_RATE_LIMIT_PER_MINUTE", 20)
CHAT_DAILY_MESSAGE_QUOTA = env_int("CHAT_DAILY_MESSAGE_QUOTA", 500)
CHAT_DAILY_TOKEN_QUOTA = env_int("CHAT_DAILY_TOKEN_QUOTA", 2_000_000)
# A reply's max_tokens is held against the token quota while it is written; a reservation
# never settled (its process died) stops counting after this long.
CHAT_USAGE_RESERVATION_SECONDS = env_int("CHAT_USAGE_RESERVATION_SECONDS", 3600)
# Sign-in throttling: this many failures within the lock period lock the key for that period.
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5)
LOGIN_MAX_FAILURES_PER_ADDRESS = env_int("LOGIN_MAX_FAILURES_PER_ADDRESS", 50)
LOGIN_LOCK_SECONDS = env_int("LOGIN_LOCK_SECONDS", 15 * 60)
# Sign-ups per client address within SIGNUP_WINDOW_SECONDS (0 = no limit).
SIGNUP_MAX_PER_ADDRESS = env_int("SIGNUP_MAX_PER_ADDRESS", 5)
SIGNUP_WINDOW_SECONDS = env_int("SIGNUP_WINDOW_SECONDS", 60 * 60)
# Chat sockets: frames per second per socket (average, and burst), open sockets per user and
# process, and how often a socket re-checks that its session is still signed in.
CHAT_SOCKET_FRAMES_PER_SECOND = env_float("CHAT_SOCKET_FRAMES_PER_SECOND", 10.0)
CHAT_SOCKET_FRAME_BURST = env_int("CHAT_SOCKET_FRAME_BURST", 30)
CHAT_SOCKETS_PER_USER = env_int("CHAT_SOCKETS_PER_USER", 30)
CHAT_SOCKET_SESSION_CHECK_SECONDS = env_float("CHAT_SOCKET_SESSION_CHECK_SECONDS", 30.0)
# Crash recovery: each process marks its streaming replies alive this often; a reply whose
# heartbeat is older than CHAT_HEARTBEAT_STALE_AFTER belongs to a dead process.
CHAT_HEARTBEAT_INTERVAL = env_float("CHAT_HEARTBEAT_INTERVAL", 5.0)
CHAT_HEARTBEAT_STALE_AFTER = env_float("CHAT_HEARTBEAT_STALE_AFTER", 3 * CHAT_HEARTBEAT_INTERVAL)
# On SIGTERM, in-flight replies get this long to finish before they are saved as interrupted.
CHAT_SHUTDOWN_GRACE = env_float("CHAT_SHUTDOWN_GRACE", 3.0)
