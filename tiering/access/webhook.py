"""`tiering serve`: a small HTTP endpoint for S3 / MinIO bucket notifications (reads only).

``POST /v1/events/s3`` takes the JSON body MinIO's webhook target and AWS S3 send (``{"Records": [...]}``)
and counts ``s3:ObjectAccessed:Get`` events into the daily roll-up. ``GET /healthz`` answers ``ok``.
The dataset prefix index is rebuilt every minute so new registrations are seen.

Reads steer what is promoted, demoted and archived, so posting events needs ``Authorization: Bearer
<token>`` (compared in constant time); the token comes from the environment or a file the config names
(:class:`~tiering.config.WebhookConfig`), never from the command line. Serving without one takes an
explicit ``--insecure-no-auth``. A request with a non-ASCII header or a bad ``Content-Length`` gets 400; a
client that stalls is dropped after ``CONNECTION_TIMEOUT_SECONDS``; up to ``LISTEN_BACKLOG`` connections wait
to be accepted, each served by its own thread.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tiering.access.ingest import ingest_s3_event_document, prefix_index
from tiering.app import App
from tiering.errors import ConfigError, TieringError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 2**20
INDEX_TTL_SECONDS = 60.0
#: a connection that sends nothing for this long (seconds) is closed
CONNECTION_TIMEOUT_SECONDS = 30.0
#: connections the kernel queues before they are accepted (a burst of notifications from many servers)
LISTEN_BACKLOG = 1024

NO_TOKEN_HINT = (
    "tiering serve needs a token: set TIERING_WEBHOOK_TOKEN (or name a variable or file with webhook.token_env / "
    "webhook.token_file in the config), or pass --insecure-no-auth to accept events from anyone"
)


class EventServer(ThreadingHTTPServer):
    """One thread per connection, a real listen backlog, and one log line (no traceback) per broken request."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("webhook: a request from %s failed", client_address[0], exc_info=log.isEnabledFor(logging.DEBUG))


def make_server(
    app: App, *, host: str, port: int, token: str | None = None, insecure_no_auth: bool = False
) -> EventServer:
    """The event endpoint, bound and listening (not serving yet).

    ``token``: the bearer token every POST must carry. None is refused with :class:`ConfigError` unless
    ``insecure_no_auth``, which accepts events from anyone.
    """
    if not token and not insecure_no_auth:
        raise ConfigError(NO_TOKEN_HINT)
    expected = f"Bearer {token}".encode() if token else None
    state: dict[str, Any] = {"index": prefix_index(app), "built": time.monotonic()}
    lock = threading.Lock()

    def index() -> Any:
        with lock:
            if time.monotonic() - state["built"] > INDEX_TTL_SECONDS:
                state["index"], state["built"] = prefix_index(app), time.monotonic()
            return state["index"]

    class Handler(BaseHTTPRequestHandler):
        server_version = "tiering"
        protocol_version = "HTTP/1.1"  # keep-alive: a notifier posting many events reuses its connection
        timeout = CONNECTION_TIMEOUT_SECONDS

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return  # no request log: the Authorization header must never reach a log

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code >= 400:
                self.send_header("Connection", "close")  # the request's body may be left unread
                self.close_connection = True
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
            if not all(value.isascii() for value in self.headers.values()):
                self._reply(400, {"error": "header values must be ASCII"})
                return
            if expected is not None:
                given = self.headers.get("Authorization", "").encode("ascii")
                if not hmac.compare_digest(given, expected):
                    self._reply(401, {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"})
                    return
            raw_length = self.headers.get("Content-Length", "").strip()
            if not raw_length.isdigit():
                self._reply(400, {"error": "expected a JSON body with a numeric Content-Length"})
                return
            length = int(raw_length)
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

    return EventServer((host, port), Handler)


def serve(app: App, *, host: str, port: int, token: str | None = None, insecure_no_auth: bool = False,
          echo: Callable[[str], None] = print) -> None:
    server = make_server(app, host=host, port=port, token=token, insecure_no_auth=insecure_no_auth)
    echo(f"listening on http://{host}:{server.server_address[1]}/v1/events/s3"
         + (" (no token: anyone may post events)" if not token else ""))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
