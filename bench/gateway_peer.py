"""The peers that `make bench-gateway` runs beside ``notifier gateway``, as uvicorn app factories.

- ``create_app``: what a user would write instead of the gateway. A plain sse-starlette
  ``EventSourceResponse`` per page, each page with a ``redis.asyncio`` pub/sub subscription of
  its own to its task's channel, yielding every message as it comes: one Redis connection per
  open page, and Redis itself writes every event to each of them. No tokens, no history, no
  resuming, no event name (the page reads the type from the JSON): less work per event than
  the gateway does, so the comparison is generous to the peer.
- ``consumer_app``: the same SSE over ``notifier.consumer.subscribe()``, two Redis connections
  per open page (what a gateway built on the consumer API does).

Both name the channel as the notifier does (``naming_for(config)``, with the configuration that
``$NOTIFIER_CONFIG`` names) and send the event's JSON as it was published, so that the bench
times their events exactly as it times the gateway's. Run with the gateway's uvicorn options:

    NOTIFIER_CONFIG=... uvicorn --factory bench.gateway_peer:create_app --loop uvloop \\
        --http httptools --no-access-log --backlog 4096
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import redis.asyncio
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from notifier import load_config
from notifier.consumer import subscribe
from notifier.naming import naming_for

ROUTE = "/tasks/{task_id:path}/events"  # the gateway's: the load generator asks both the same


def create_app() -> Starlette:
    """sse-starlette, one ``redis.asyncio`` pub/sub subscription per open page."""
    config = load_config()
    naming = naming_for(config)
    # redis-py's pool holds 100 connections by default, and every page's pub/sub takes one
    # for as long as the page is open: a user meets "Too many connections" and raises it.
    client = redis.asyncio.Redis.from_url(
        config.redis.url, decode_responses=True, max_connections=1_000_000
    )

    async def events(request: Request) -> EventSourceResponse:
        channel = naming.channel(request.path_params["task_id"])

        async def messages() -> AsyncIterator[dict[str, str]]:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        yield {"data": message["data"]}

        return EventSourceResponse(messages())

    return Starlette(routes=[Route(ROUTE, events)])


def consumer_app() -> Starlette:
    """Starlette's StreamingResponse over ``notifier.consumer.subscribe()`` per open page."""
    config = load_config()

    async def events(request: Request) -> StreamingResponse:
        async def frames() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            task_id = request.path_params["task_id"]
            async for event in subscribe(task_id, config=config, follow=True):
                yield b"event: %s\ndata: %s\n\n" % (
                    str(event["type"]).encode(),
                    orjson.dumps(event),  # compact, as the gateway sends it
                )

        return StreamingResponse(frames(), media_type="text/event-stream")

    return Starlette(routes=[Route(ROUTE, events)])
