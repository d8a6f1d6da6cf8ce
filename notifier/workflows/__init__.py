"""Workflows: one channel for a Celery canvas (a chain, a group, a chord), fed by its members.

Every member's own events go to its task's channel as always; with ``install(app)`` each also
becomes a *step* for its workflow, which a script in Redis applies to the workflow's state and
turns into workflow events (``script``). The script runs on the notifier thread's connection
like any other command, so the flow stays caller -> queue -> notifier thread -> Redis, and the
one terminal event of a workflow is decided in one place, atomically, whichever process each
member ran in.

- ``ids``: a workflow's channel id, ``workflow:<id>``, which names its channel and history
  stream exactly as a task id does;
- ``steps``: what the callers queue (encoded on their thread, like every event);
- ``script``: the Lua script and its command, on the notifier thread;
- ``notifier.celery.canvas``: the Celery side, which knows which tasks belong to which workflow
  and how many members it has.
"""
