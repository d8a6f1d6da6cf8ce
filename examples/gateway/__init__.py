"""A WebSocket gateway that streams a task's events to browsers: ``python -m examples.gateway``.

See ``app.py`` for the routes and ``__main__.py`` for the command line.
"""
