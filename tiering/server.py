"""`tiering serve`: a small HTTP endpoint for S3 / MinIO bucket notifications (reads only).

``POST /v1/events/s3`` takes the JSON body MinIO's webhook target and AWS S3 send (``{"Records": [...]}``)
and counts ``s3:ObjectAccessed:Get`` events into the daily roll-up. ``GET /healthz`` answers ``ok``.
The dataset prefix index is rebuilt every minute so new registrations are seen.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tiering.app import App
from tiering.errors import TieringError
from tiering.lifecycle import ingest_s3_event_document, prefix_index

MAX_BODY_BYTES = 16 * 2**20
INDEX_TTL_SECONDS = 60.0


def make_server(app: App, *, host: str, port: int, token: str | None = None) -> ThreadingHTTPServer:
    state: dict[str, Any] = {"index": prefix_index(app), "built": time.monotonic()}
    lock = threading.Lock()

    def index() -> Any:
        with lock:
            if time.monotonic() - state["built"] > INDEX_TTL_SECONDS:
                state["index"], state["built"] = prefix_index(app), time.monotonic()
            return state["index"]

    class Handler(BaseHTTPRequestHandler):
        server_version = "tiering"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return  # no request log: the Authorization header must never reach a log

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self.path == "/healthz":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            if self.path != "/v1/events/s3":
                self._reply(404, {"error": "not found"})
                return
            if token is not None:
                given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(given, token):
                    self._reply(401, {"error": "missing or wrong bearer token"})
                    return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY_BYTES:
                self._reply(413 if length > MAX_BODY_BYTES else 400, {"error": "expected a JSON body"})
                return
            body = self.rfile.read(length)
            try:
                result = ingest_s3_event_document(app, body, index=index())
            except TieringError as exc:
                self._reply(503, {"error": str(exc)})
                return
            code = 400 if result.malformed and not result.events else 200
            self._reply(code, {"events": result.events, "counted": result.counted, "unmatched": result.unmatched,
                               "not_reads": result.skipped_non_read, "malformed": result.malformed})

    return ThreadingHTTPServer((host, port), Handler)


def serve(app: App, *, host: str, port: int, token: str | None = None,
          echo: Callable[[str], None] = print) -> None:
    server = make_server(app, host=host, port=port, token=token)
    echo(f"listening on http://{host}:{server.server_address[1]}/v1/events/s3")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
