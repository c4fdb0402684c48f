"""A webhook receiver for tests: a threaded HTTP server on 127.0.0.1 that answers by a script and
records every request, so a test can verify each delivery as a client's endpoint would."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: str


@dataclass
class Receiver:
    """A threaded HTTP server on 127.0.0.1 answering POSTs by its script (then ``default``), recording each."""

    script: list[int] = field(default_factory=list)
    default: int = 204
    location: str | None = None
    answer_body: bytes = b""
    # Set: every request waits for it (at most 15 s) before answering.
    hold: threading.Event | None = None
    # Set: the answer's first 8 KB are sent at once, the rest after ``trickle`` is set (at most 15 s).
    trickle: threading.Event | None = None
    # Set: served over TLS with this context (``url`` names 127.0.0.1 still; the test names the host).
    tls: ssl.SSLContext | None = None
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # what each request was answered, in order
    answered: list[float] = field(default_factory=list)
    url: str = ""
    port: int = 0

    def start(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode()
                receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.hold is not None:
                    receiver.hold.wait(15)
                status = receiver.script.pop(0) if receiver.script else receiver.default
                receiver.statuses.append(status)
                self.send_response(status)
                if receiver.location is not None:
                    self.send_header("location", receiver.location)
                self.send_header("content-length", str(len(receiver.answer_body)))
                self.end_headers()
                if receiver.trickle is not None:
                    self.wfile.write(receiver.answer_body[:8192])
                    self.wfile.flush()
                    receiver.trickle.wait(15)
                    self.wfile.write(receiver.answer_body[8192:])
                else:
                    self.wfile.write(receiver.answer_body)
                receiver.answered.append(time.monotonic())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_port
        self.url = f"http://127.0.0.1:{server.server_port}/hook"
        return server


@contextlib.contextmanager
def serving(receiver: Receiver) -> Iterator[Receiver]:
    """``receiver`` serving until the block ends; a held or trickling answer is released first."""
    server = receiver.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        for event in (receiver.hold, receiver.trickle):
            if event is not None:
                event.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
