"""Refuse request bodies over their limit with a 413 that names it.

Every body but an upload (``POST /datasets``, bounded by the datasets quota as it
streams to disk) may be up to ``SYNCSGD_MAX_REQUEST_BYTES``.

A declared ``Content-Length`` over the limit is refused before a byte is read; a
streamed body is cut off as soon as it passes the limit (the ``HTTPException``
raised from ``receive`` reaches the app's handler, which words the message).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_message(limit: int, setting: str) -> str:
    return f"request body is over the limit of {limit} bytes ({setting})"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upload = scope["type"] == "http" and scope["method"] == "POST" and (
            scope["path"].rstrip("/") == "/datasets")
        if scope["type"] != "http" or upload:
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit, "SYNCSGD_MAX_REQUEST_BYTES"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"detail": too_large_message(limit, setting)},
                                    status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, too_large_message(limit, setting))
            return message

        await self.app(scope, limited_receive, send)
