"""A lean request path for the hot S3 operations: SigV4 by hand over pooled keep-alive connections, each
request's head built in one piece and each answer framed by ``http.client``'s response reader.

Why: on a small machine the client's CPU per request decides how many small objects move per second, and
botocore spends much Python (GIL held) on each one (measured in bench/): event hooks, model-driven serialisation and
parsing, an ``Expect: 100-continue`` round trip before every PUT body, and a SHA-256 of every payload on
plain-http endpoints. This path signs with a cached SigV4 key and sends ``UNSIGNED-PAYLOAD`` (our own
xxh3-128 verification is the integrity check that counts; SeaweedFS does not even check a signed payload's
hash), which costs a fraction of that.

Scope: GET (ranged or whole), HEAD, PUT (single object and multipart parts), DELETE, and the POSTs whose
XML the caller writes and reads (DeleteObjects, multipart create and complete), on a plain-http endpoint
with path-style addressing and static credentials. Everything else (listing, buckets, restores, TLS
endpoints, AWS itself) stays on botocore. This module never
imports botocore: it raises :class:`LeanHTTPError` (an error answer) and :class:`LeanConnectionError`
(no answer); :mod:`tiering.storage.s3.core` turns both into our error tree, through the same translation as
botocore's errors.

Retries mirror botocore's "standard" mode for the statuses and failures it retries: 500, 502, 503, 504,
throttling codes, connection failures; ``attempts`` counts the first try. A kept-alive connection that the
server closed while idle is retried at once on a new connection, without using up an attempt.

Every request has a deadline: ``request_timeout`` seconds plus ``seconds_per_mib`` per MiB of its body, its
retries included. No attempt starts and no backoff waits past it, and an attempt's socket waits at most until
it, so an endpoint that accepts connections and never answers costs one deadline, not attempts x timeouts.
A streamed answer's body is read with ``read_timeout`` per read once its head has arrived.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Final
from urllib.parse import quote, urlsplit

UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
_RETRY_STATUSES: Final = frozenset({500, 502, 503, 504})
RETRY_CODES: Final = frozenset({
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "Throttling", "ThrottlingException",
    "ThrottledException", "RequestThrottledException", "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException",
    "RequestThrottled", "SlowDown", "EC2ThrottledException", "InternalError",
})
_CODE_RE: Final = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE_RE: Final = re.compile(rb"<Message>([^<]*)</Message>")
#: an error body is read up to this many bytes (it is a short XML document)
_ERROR_BODY_LIMIT: Final = 64 * 1024
#: bytes an answer reads from its socket at a time (http.client's default is 8 KiB): the head and a body
#: up to 64 KiB come in with one recv, so a small GET releases and takes back the GIL fewer times
ANSWER_BUFFER: Final = 64 * 1024
#: a PUT body up to this size goes out in the same send as the request's head
_JOINED_BODY: Final = 256 * 1024
#: a header name (an RFC 9110 token)
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: what a request path must not hold (as http.client checks)
_BAD_PATH: Final = re.compile(r"[\x00-\x20\x7f]")
#: backoff cap (seconds), as botocore's standard mode
MAX_BACKOFF: Final = 20.0


class LeanHTTPError(Exception):
    """The server answered with an error status. ``code`` is the S3 error code (the status for HEAD)."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers)


class LeanConnectionError(Exception):
    """No usable answer. ``kind``: ``connect`` (nothing listens or connect timed out), ``closed`` (reset or
    closed mid-exchange), ``timeout`` (no answer within the read timeout)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass(frozen=True)
class StaticKeys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class _Signer:
    """AWS Signature Version 4 for service ``s3``, with the day's signing key cached."""

    def __init__(self, region: str, keys_source: Callable[[], StaticKeys | None]) -> None:
        self._region = region
        self._keys_source = keys_source
        self._cache: tuple[str, str, bytes] | None = None  # (day, secret, key)
        self._lock = threading.Lock()

    def _signing_key(self, day: str, secret: str) -> bytes:
        cached = self._cache
        if cached is not None and cached[0] == day and cached[1] == secret:
            return cached[2]
        key = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
        for part in (self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        with self._lock:
            self._cache = (day, secret, key)
        return key

    def sign(self, method: str, path: str, query: str, headers: dict[str, str]) -> bool:
        """Add ``x-amz-date``, the payload marker and ``Authorization`` to ``headers`` (which must hold
        ``host`` and every other header to sign, lower-case). False when no credentials are available."""
        keys = self._keys_source()
        if keys is None:
            return False
        now = time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
        day = amz_date[:8]
        headers["x-amz-date"] = amz_date
        headers["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
        if keys.session_token:
            headers["x-amz-security-token"] = keys.session_token
        names = sorted(headers)
        signed = ";".join(names)
        canonical = "\n".join((
            method, path, query,
            "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names),
            signed, UNSIGNED_PAYLOAD,
        ))
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day, keys.secret_access_key), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={keys.access_key_id}/{scope}, SignedHeaders={signed}, "
            f"Signature={signature}"
        )
        return True


#: limits on an answer's head, as http.client's
_MAX_LINE: Final = 65536
_MAX_HEADERS: Final = 100


class _Headers(http.client.HTTPMessage):
    """An answer's headers, names lower-cased, with the lookups http.client and we make (``get``,
    ``get_all``, ``items``), filled without the email package's parser."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self._fields = fields

    def get(self, name: str, failobj: object = None) -> object:  # type: ignore[override]
        return self._fields.get(name.lower(), failobj)

    def get_all(self, name: str, failobj: object = None) -> object:  # type: ignore[override]
        value = self._fields.get(name.lower())
        return [value] if value is not None else failobj

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields.items())


def _read_header_fields(fp: BinaryIO) -> dict[str, str]:
    """Header lines up to the blank line, as ``{lower-cased name: value}`` (repeated names joined by
    ", ", as RFC 9110 allows)."""
    fields: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return fields
        name, sep, value = line.decode("iso-8859-1").partition(":")
        if not sep:
            continue  # not a header line (http.client's parser drops these too)
        name, value = name.strip().lower(), value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")


class _AnswerSocket:
    """What http.client's answer reads from: the socket, buffered by ``ANSWER_BUFFER`` bytes instead of 8 KiB,
    so the head and a small body usually come in with one ``recv``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def makefile(self, mode: str) -> BinaryIO:
        return self._sock.makefile(mode, buffering=ANSWER_BUFFER)  # type: ignore[call-overload, no-any-return]


class _LeanHTTPResponse(http.client.HTTPResponse):
    """http.client's answer with a lighter head: its own reads the headers through the email package,
    which costs far more CPU per answer than :func:`_read_header_fields`. The rest of ``begin``
    is http.client's (the framing of the body: chunked, Content-Length, or read to the close)."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(_AnswerSocket(sock), *args, **kwargs)  # type: ignore[arg-type]

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            _read_header_fields(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _Headers(_read_header_fields(self.fp))
        encoding = self.headers.get("transfer-encoding")
        self.chunked = isinstance(encoding, str) and encoding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if isinstance(length, str) and not self.chunked:
            with contextlib.suppress(ValueError):
                declared = int(length)
                self.length = declared if declared >= 0 else None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200 \
                or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class _Connection:
    """One kept-alive TCP connection to the endpoint. ``exchange`` sends a request whose head the caller
    built and reads the answer's head. The pool (:class:`LeanS3Client`) lends a connection to one request at
    a time and takes it back only once the answer's body was read to its end."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def exchange(self, method: str, head: bytes, body: bytes | memoryview | None, *,
                 send_timeout: float, answer_timeout: float) -> _LeanHTTPResponse:
        """Send, then read the answer's head; ``send_timeout`` bounds the whole send, ``answer_timeout`` the
        wait for the head (seconds)."""
        self.sock.settimeout(send_timeout)
        if body is not None and len(body) <= _JOINED_BODY:
            self.sock.sendall(head + body)  # one segment and one system call for a small PUT
        else:
            self.sock.sendall(head)
            if body is not None:
                self.sock.sendall(body)
        self.sock.settimeout(answer_timeout)
        resp = _LeanHTTPResponse(self.sock, method=method)
        try:
            resp.begin()
        except BaseException:
            resp.close()
            raise
        return resp

    def close(self) -> None:
        self.sock.close()


def _request_head(method: str, url: str, headers: Mapping[str, str]) -> bytes:
    """The request line and headers, as http.client would send them (values in Latin-1), built in one go:
    http.client spends more Python per request validating and joining them one header at a time."""
    lines = [f"{method} {url} HTTP/1.1"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} cannot be sent: its name or value breaks the request")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class LeanResponse:
    """A successful answer. For GET, ``read`` streams the body; the connection goes back to the pool once
    the body was read to its end, and is closed (not reused) when the caller closes early."""

    def __init__(self, client: LeanS3Client, conn: _Connection,
                 resp: http.client.HTTPResponse) -> None:
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self._client = client
        self._conn: _Connection | None = conn
        self._resp = resp
        #: body bytes still to come, as http.client framed the answer (0 for HEAD, None when chunked)
        self._left: int | None = resp.length

    def read(self, size: int = -1, /) -> bytes:
        if self._conn is None:
            return b""
        if self._left is not None and (size is None or size < 0 or size > self._left):
            size = self._left
        try:
            data = self._resp.read(size) if size is not None and size >= 0 else self._resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._discard()
            raise LeanConnectionError("closed", f"reading the body: {type(exc).__name__}") from exc
        if self._left is not None:
            self._left -= len(data)
            if not data and self._left > 0:
                self._discard()
                raise LeanConnectionError("closed", f"body ended {self._left} bytes early")
            if self._left == 0:
                self._finish()
        elif not data:
            self._finish()
        return data

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._resp.close()
            self._client._release(conn, reusable=not self._resp.will_close)

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._resp.close()
            conn.close()

    def close(self) -> None:
        if self._conn is None:
            return
        if self._left == 0 or self._resp.isclosed():  # read to its end (a chunked body: to its last chunk)
            self._finish()
        else:
            self._discard()  # unread bytes on the wire: the connection cannot carry another request


class LeanS3Client:
    """Signed S3 requests to one plain-http endpoint, path-style, over a pool of kept-alive connections.

    Thread-safe. At most ``max_idle`` idle connections are kept; as many as there are concurrent requests
    are opened. Timeouts are seconds.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        region: str,
        keys_source: Callable[[], StaticKeys | None],
        attempts: int,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int,
        request_timeout: float = 30.0,
        seconds_per_mib: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the lean path speaks plain http only, not {endpoint!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.host_header = parts.netloc
        self.base_path = parts.path.rstrip("/")
        if _BAD_PATH.search(self.base_path):
            raise ValueError(f"the endpoint's path holds a space or a control character: {endpoint!r}")
        self._signer = _Signer(region, keys_source)
        self.attempts = max(1, attempts)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.request_timeout = request_timeout
        self.seconds_per_mib = seconds_per_mib
        self._monotonic = monotonic
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._sleep = sleep

    # -- connections -------------------------------------------------------------------------------

    def _acquire(self, connect_timeout: float) -> tuple[_Connection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        try:
            sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
        except OSError as exc:
            raise LeanConnectionError("connect", f"{self.host_header}: {type(exc).__name__}") from exc
        sock.settimeout(self.read_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(sock), False

    def _release(self, conn: _Connection, *, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- requests ----------------------------------------------------------------------------------

    def path_for(self, bucket: str, key: str) -> str:
        """The request path of ``key`` in ``bucket``; the bucket's own path for an empty key."""
        if not key:
            return f"{self.base_path}/{bucket}"
        return f"{self.base_path}/{bucket}/{quote(key, safe='/~')}"

    def request(
        self,
        method: str,
        bucket: str,
        key: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | memoryview | None = None,
        stream: bool = False,
    ) -> LeanResponse:
        """Send one request (retried as described in the module docstring) and return its answer.

        With ``stream`` the body of a successful answer is left to the caller (``LeanResponse.read``);
        otherwise it is read (and discarded) here. Raises :class:`LeanHTTPError` for an error status,
        :class:`LeanConnectionError` when there is no answer, ``PermissionError`` when no credentials.
        """
        path = self.path_for(bucket, key)
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted((query or {}).items())
        )
        url = f"{path}?{canonical_query}" if canonical_query else path
        budget = self.request_timeout + (len(body) if body is not None else 0) / 2**20 * self.seconds_per_mib
        deadline = self._monotonic() + budget
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._send_once(method, path, url, canonical_query, headers, body, stream,
                                       deadline=deadline, budget=budget)
            except LeanHTTPError as exc:
                retry = exc.status in _RETRY_STATUSES or exc.code in RETRY_CODES or exc.status == 429
                if not retry or attempt >= self.attempts:
                    raise
            except LeanConnectionError:
                if attempt >= self.attempts:
                    raise
            pause = random.random() * min(MAX_BACKOFF, 2.0 ** (attempt - 1))
            if self._monotonic() + pause >= deadline:
                raise LeanConnectionError(
                    "timeout", f"{method} {self.host_header}: no answer within the request's {budget:g} s"
                ) from None
            self._sleep(pause)

    def _send_once(
        self, method: str, path: str, url: str, query: str, extra: Mapping[str, str] | None,
        body: bytes | memoryview | None, stream: bool, *, deadline: float, budget: float,
    ) -> LeanResponse:
        headers = {"host": self.host_header}
        for name, value in (extra or {}).items():
            headers[name.lower()] = value
        if not self._signer.sign(method, path, query, headers):
            raise PermissionError("no credentials for the lean S3 path")
        if body is not None or method in ("PUT", "POST"):
            headers["content-length"] = str(len(body) if body is not None else 0)
        headers["accept-encoding"] = "identity"
        head = _request_head(method, url, headers)
        for _ in range(2):  # a second time only when a kept-alive connection turned out closed
            left = deadline - self._monotonic()
            if left <= 0:
                raise LeanConnectionError(
                    "timeout", f"{method} {self.host_header}: no answer within the request's {budget:g} s")
            conn, reused = self._acquire(min(self.connect_timeout, left))
            left = max(0.001, deadline - self._monotonic())
            try:
                resp = conn.exchange(method, head, body, send_timeout=left,
                                     answer_timeout=min(self.read_timeout, left))
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
                conn.close()
                if reused:
                    continue
                raise LeanConnectionError("closed", f"{method} {self.host_header}: {type(exc).__name__}") from exc
            except TimeoutError as exc:
                conn.close()
                raise LeanConnectionError("timeout", f"{method} {self.host_header}: no answer") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise LeanConnectionError("closed", f"{method} {self.host_header}: {type(exc).__name__}") from exc
            conn.sock.settimeout(self.read_timeout)  # the body of the answer: read_timeout per read
            if resp.status >= 300:
                raise self._error(conn, resp, method)
            answer = LeanResponse(self, conn, resp)
            if not stream:
                with contextlib.suppress(LeanConnectionError):
                    while answer.read(1 << 20):
                        pass
                answer.close()
            return answer
        raise LeanConnectionError("closed", f"{method} {self.host_header}: connection closed twice")

    def _error(self, conn: _Connection, resp: http.client.HTTPResponse, method: str) -> LeanHTTPError:
        headers = {k.lower(): v for k, v in resp.getheaders()}
        body = b""
        try:
            body = resp.read(_ERROR_BODY_LIMIT) if method != "HEAD" else b""
            reusable = not resp.will_close and resp.isclosed()
        except (OSError, http.client.HTTPException):
            reusable = False
        if reusable:
            self._release(conn, reusable=True)
        else:
            conn.close()
        code_m = _CODE_RE.search(body)
        message_m = _MESSAGE_RE.search(body)
        code = code_m.group(1).decode(errors="replace") if code_m else str(resp.status)
        message = message_m.group(1).decode(errors="replace") if message_m else (resp.reason or "")
        return LeanHTTPError(resp.status, code, message, headers)
