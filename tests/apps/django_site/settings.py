"""The test site's settings, from the environment the test gives each process:
``TEST_REDIS_URL`` (the notifier, the channel layers, the broker), ``TEST_DJANGO_DB`` (an SQLite
file), and ``TEST_NOTIFIER`` (JSON: replaces ``NOTIFIER``, for the checks' tests)."""

from __future__ import annotations

import json
import os

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
GATEWAY_SECRET = "test-gateway-secret-0123456789abcdef"  # support/gateway.py's SECRET

SECRET_KEY = "django-site-of-the-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "notifier.django",
    "apps.django_site",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "apps.django_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TEST_DJANGO_DB", ":memory:"),
    }
}
STATIC_URL = "/static/"
LOGIN_URL = "/login/"
ASGI_APPLICATION = "apps.django_site.asgi.application"

# Both channels_redis layers on one Redis: each consumer picks its alias (consumers.py).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 2000},
    },
    "pubsub": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    },
}

NOTIFIER = {
    "redis": {"url": REDIS_URL, "connect_timeout": 1.0, "publish_timeout": 1.0},
    "queue": {"progress_interval": 0.0},
    "reconnect": {"initial_backoff": 0.01, "max_backoff": 0.2},
    "history": {"enabled": True, "ttl_seconds": 600},
    "gateway": {"secret": GATEWAY_SECRET},
}
if os.environ.get("TEST_NOTIFIER"):
    NOTIFIER = json.loads(os.environ["TEST_NOTIFIER"])
