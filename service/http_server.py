"""The HTTP server's own bound on a request's head (request line and headers): 431 past it, at once.

Why: no ASGI code sees a request before the server has parsed its head, and uvicorn's httptools
protocol has no limit of its own: one 128 MiB header sent to `/healthz` (no key needed) held the
event loop for 13.7 s while httptools accumulated it, stalling every other request. This protocol
counts the bytes of each request's head as they arrive; once a read would take the head past
`ROBUSTLAB_MAX_REQUEST_HEAD_BYTES` (64 KiB by default: real heads are a few hundred bytes) it
answers `431 Request Header Fields Too Large` and closes the connection without handing that read
to the parser: a long request line or a long header costs the loop no more than 64 KiB of parsing.

Every way the API is served uses it: `robustlab api` (uvicorn.run with `http=BoundedHttpToolsProtocol`),
`robustlab up` and the test servers (`uvicorn --http service.http_server:BoundedHttpToolsProtocol`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.settings import get_settings

logger = logging.getLogger(__name__)

PROTOCOL = "service.http_server:BoundedHttpToolsProtocol"  # for `uvicorn --http ...`


def _answer(limit: int) -> bytes:
    body = json.dumps({"error": {"type": "request_header_too_large", "message": f"the request line and headers "
                                 f"exceed {limit:,} bytes (ROBUSTLAB_MAX_REQUEST_HEAD_BYTES)", "problems": []}})
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body.encode())


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the bytes of each request's head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_limit = get_settings().max_request_head_bytes
        self.in_head = True  # the bytes arriving now belong to a request line or headers
        self.head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            before, self.head_bytes = self.head_bytes, self.head_bytes + len(data)
            if self.head_bytes > self.head_limit:
                end = data.find(b"\r\n\r\n")  # where the head ends in this read, if it does
                if end < 0 or before + end + 4 > self.head_limit:
                    self._refuse()
                    return
        super().data_received(data)

    def _refuse(self) -> None:
        """431 and close, without handing the parser the read that went past the limit."""
        if not self.transport.is_closing():
            logger.warning("refused a request whose head exceeds %d bytes from %s", self.head_limit, self.client)
            self.transport.write(_answer(self.head_limit))
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head, self.head_bytes = True, 0
