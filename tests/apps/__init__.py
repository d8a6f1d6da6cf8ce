"""The tests' own Celery apps, run by real workers (``celery -A apps.gevent_app worker``).

A worker finds them as the tests do, with ``tests/`` on its ``PYTHONPATH`` (support.celery's
AppWorker sets it); each app is configured by apps.celery_apps.
"""
