"""The reference application: Celery tasks that use the notifier through its public API."""
