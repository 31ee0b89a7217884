"""Refuse request bodies over ``SYNCSGD_MAX_REQUEST_BYTES`` with a 413 that names the limit.

A declared ``Content-Length`` over the limit is refused before a byte is read; a
streamed body is cut off as soon as it passes the limit (the ``HTTPException``
raised from ``receive`` reaches the app's handler, which words the message).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_message(limit: int) -> str:
    return f"request body is over the limit of {limit} bytes (SYNCSGD_MAX_REQUEST_BYTES)"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": too_large_message(self.limit)}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, too_large_message(self.limit))
            return message

        await self.app(scope, limited_receive, send)
