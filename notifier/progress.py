"""celery-progress's ``ProgressRecorder``, publishing through the notifier.

A task written for celery-progress changes one import::

    from notifier.progress import ProgressRecorder

    @app.task(bind=True)
    def import_rows(self, rows):
        recorder = ProgressRecorder(self)
        for i, row in enumerate(rows, 1):
            ...
            recorder.set_progress(i, len(rows), f"row {i}")

Each call publishes a ``progress`` event on the task's channel (coalesced like every progress
event: ``queue.progress_interval``) and, by default, still stores celery-progress's ``PROGRESS``
state in the result backend, so that pages that poll celery-progress's endpoint keep working
while they are moved to the notifier one at a time.
"""

from __future__ import annotations

from typing import Any, Protocol

from notifier import default
from notifier.publisher import Notifier

PROGRESS_STATE = "PROGRESS"  # celery-progress's custom task state


class BoundTask(Protocol):
    """What the recorder uses of a bound Celery task (``bind=True``): its id, ``update_state``."""

    @property
    def request(self) -> Any: ...

    def update_state(self, task_id: Any = None, state: Any = None, meta: Any = None) -> Any: ...


class ProgressRecorder:
    """Reports a task's progress as celery-progress's recorder does, and publishes it.

    ``task`` is the bound task (``self`` in ``@app.task(bind=True)``). ``update_state=False``
    stops storing the ``PROGRESS`` state in the result backend (a backend write per call) once
    no page polls for it. ``notifier`` is the notifier to publish with: the process's default
    one (``notifier.configure``, ``notifier.celery.install``) unless given.
    """

    def __init__(
        self,
        task: BoundTask,
        *,
        update_state: bool = True,
        notifier: Notifier | None = None,
    ) -> None:
        self.task = task
        self.update_state = update_state
        self._notifier = notifier

    def set_progress(
        self, current: float, total: float, description: str = ""
    ) -> tuple[str, dict[str, Any]]:
        """Publish a ``progress`` event: ``data.progress`` is ``current`` in ``total`` as a
        percent rounded to two places (0 when ``total`` is 0 or less), ``data.message`` the
        description (None when empty), ``data.current`` and ``data.total`` as given. Returns
        celery-progress's ``(state, meta)``, the pair it stores with ``update_state``."""
        percent = float(round(current / total * 100, 2)) if total > 0 else 0.0
        meta = {
            "pending": False,
            "current": current,
            "total": total,
            "percent": percent,
            "description": description,
        }
        task_id = self.task.request.id
        if task_id is not None:  # None: the task's function was called directly, not run
            notifier = self._notifier if self._notifier is not None else default.get_notifier()
            notifier.publish_progress(
                task_id, percent, description or None, current=current, total=total
            )
        if self.update_state:
            self.task.update_state(state=PROGRESS_STATE, meta=meta)
        return PROGRESS_STATE, meta


__all__ = ["PROGRESS_STATE", "BoundTask", "ProgressRecorder"]
