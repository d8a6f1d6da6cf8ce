"""The app's start: register the checks, configure the default notifier from the settings."""

from __future__ import annotations

from django.apps import AppConfig

import notifier
from notifier.django.settings import notifier_config
from notifier.exceptions import ConfigError
from notifier.logs import get_logger


class NotifierAppConfig(AppConfig):
    name = "notifier.django"
    label = "notifier"
    verbose_name = "notifier"

    def ready(self) -> None:
        from notifier.django import checks  # noqa: F401 - imported for its registration

        try:
            config = notifier_config()
        except ConfigError as exc:
            # Not raised here: manage.py check must run to report it (E001), and
            # every command that runs the checks (runserver, migrate) stops on it. The default
            # notifier keeps its own lookup until the settings are right.
            get_logger("error").error("notifier_config_invalid", error=str(exc))
            return
        notifier.configure(config)
