"""notifier.gateway: task events for browsers over Server-Sent Events and WebSocket.

``create_app(config)`` is an ASGI app (Starlette) to run with ``notifier gateway`` or to mount in
a FastAPI or Starlette application; ``issue_token(task_id, config=...)`` signs the per-task token
a backend hands to the browser with the task id. Needs the ``gateway`` extra.
"""

from notifier.gateway.app import create_app
from notifier.gateway.tokens import issue_token

__all__ = ["create_app", "issue_token"]
