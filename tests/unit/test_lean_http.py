"""The lean S3 path's own reading of an answer's head: framing and headers as http.client would read them.

A scripted server on 127.0.0.1 sends exact bytes (answers SeaweedFS does not send: chunked bodies,
repeated headers, ``100 Continue``, a body that ends with the connection), and the test reads them back
through :class:`LeanS3Client`.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import pytest

from tiering.storage.s3.lean import LeanHTTPError, LeanS3Client, StaticKeys


class Scripted:
    """Answers the n-th request on any connection with ``answers[n]`` (raw bytes); counts connections."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.connections = 0
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as rf:
            while self.answers:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = rf.readline()
                    if not line:
                        return
                    head += line
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + rf.read(length))
                answer = self.answers.pop(0)
                conn.sendall(answer)
                if b"connection: close" in answer.lower():
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[list[Scripted]]:
    made: list[Scripted] = []
    yield made
    for server in made:
        server.close()


def client_for(server: Scripted) -> LeanS3Client:
    return LeanS3Client(f"http://127.0.0.1:{server.port}", region="us-east-1",
                        keys_source=lambda: StaticKeys("k", "s"), attempts=1, connect_timeout=2,
                        read_timeout=5, max_idle=4)


def test_bodies_are_framed_as_http_client_frames_them_and_connections_are_reused(
    scripted: list[Scripted],
) -> None:
    server = Scripted([
        # chunked body, repeated header
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Amz-Meta-A: 1\r\nx-amz-meta-a: 2\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        # a 100 Continue before the answer
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\nETag: \"e\"\r\n\r\nabc",
        # HEAD: Content-Length names the object's size, no body follows
        b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\nX-Amz-Meta-Xxh3-128: ff\r\n\r\n",
        # a header line without a colon is dropped; the body ends with the connection
        b"HTTP/1.1 200 OK\r\nBogus line\r\nConnection: close\r\n\r\nuntil the end",
    ])
    scripted.append(server)
    client = client_for(server)
    first = client.request("GET", "b", "k1", stream=True)
    assert first.read() == b"hello world"
    assert first.headers["x-amz-meta-a"] == "1, 2"
    first.close()
    second = client.request("GET", "b", "k2", stream=True)
    assert (second.read(), second.headers["etag"]) == (b"abc", '"e"')
    second.close()
    head = client.request("HEAD", "b", "k3")
    assert head.headers["content-length"] == "12345"
    assert head.headers["x-amz-meta-xxh3-128"] == "ff"
    last = client.request("GET", "b", "k4", stream=True)
    assert "bogus line" not in last.headers
    assert last.read() == b"until the end"
    last.close()
    assert server.connections == 1  # the first three answers left the connection reusable
    assert [r.split(b" ")[0] for r in server.requests] == [b"GET", b"GET", b"HEAD", b"GET"]


def test_an_error_answer_gives_its_code_and_message_and_a_chunked_error_body_is_read(
    scripted: list[Scripted],
) -> None:
    body = b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"
    server = Scripted([
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nContent-Type: application/xml\r\n\r\n"
        + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ])
    scripted.append(server)
    client = client_for(server)
    with pytest.raises(LeanHTTPError) as caught:
        client.request("GET", "b", "missing", stream=True)
    assert (caught.value.status, caught.value.code, caught.value.message) == (404, "NoSuchKey", "gone")
    assert caught.value.headers["content-type"] == "application/xml"
    answer = client.request("GET", "b", "there", stream=True)
    assert answer.read() == b"ok"
    assert server.connections == 1  # the error body was read to its end: the connection went on


def test_a_request_goes_out_as_http_client_would_send_it_and_a_header_that_breaks_the_head_is_refused(
    scripted: list[Scripted],
) -> None:
    small, large = b"x" * 1000, bytes(range(256)) * 2048  # 512 KiB: the head and the body go out separately
    server = Scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"] * 2)
    scripted.append(server)
    client = client_for(server)
    client.request("PUT", "b", "dir/a b&c.bin", headers={"X-Amz-Meta-Xxh3-128": "ab" * 16}, body=small)
    client.request("PUT", "b", "big.bin", body=memoryview(large))
    first, second = server.requests
    head, _, body = first.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"PUT /b/dir/a%20b%26c.bin HTTP/1.1"
    fields = dict(line.split(b": ", 1) for line in lines[1:])
    assert fields[b"host"] == f"127.0.0.1:{server.port}".encode()
    assert fields[b"content-length"] == b"1000"
    assert fields[b"x-amz-meta-xxh3-128"] == b"ab" * 16
    assert fields[b"accept-encoding"] == b"identity"
    assert b"x-amz-meta-xxh3-128" in fields[b"authorization"]  # signed as sent
    assert body == small
    assert second.partition(b"\r\n\r\n")[2] == large
    for bad in ({"X-Amz-Meta-Note": "a\r\nx-amz-acl: public-read"}, {"X-Amz-Meta-Note": "line\nbreak"},
                {"Bad Name": "v"}, {"x-amz-meta-a:b": "v"}):
        with pytest.raises(ValueError, match="cannot be sent"):
            client.request("PUT", "b", "k", headers=bad, body=small)
    assert len(server.requests) == 2  # nothing of a refused request reached the server
    assert server.connections == 1


def _ok(body: bytes = b"", headers: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_a_multipart_upload_is_started_completed_and_aborted_on_the_lean_path(scripted: list[Scripted]) -> None:
    """CreateMultipartUpload and CompleteMultipartUpload are POSTs whose XML the backend writes and reads: an
    upload id that needs escaping in the query, ETags that need it in the XML, an answer sent after
    whitespace, and an error document sent with status 200, after which the upload is aborted."""
    from tiering.config import Credentials, Secret
    from tiering.errors import TransientBackendError
    from tiering.storage.s3.backend import S3Backend

    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    started = (f'<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult {ns}><Bucket>b</Bucket>'
               "<Key>p/k</Key><UploadId>up/1+2</UploadId></InitiateMultipartUploadResult>").encode()
    part = _ok(headers='ETag: "e&1"\r\n')
    server = Scripted([
        _ok(started), part, part,
        _ok(b"  \n" + f"<CompleteMultipartUploadResult {ns}><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>"
            .encode()),
        _ok(started), part, part,
        _ok(b" <Error><Code>InternalError</Code><Message>try again</Message></Error>"),
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ])
    scripted.append(server)
    backend = S3Backend("b", "p", endpoint_url=f"http://127.0.0.1:{server.port}", retries=0,
                        credentials=Credentials("k", Secret("s")), multipart_threshold=5 * 2**20,
                        part_size=5 * 2**20, part_workers=1)
    data = b"m" * (6 * 2**20)
    backend.put("k", io.BytesIO(data), size=len(data), metadata={"xxh3": "ab"})
    with pytest.raises(TransientBackendError, match="InternalError"):
        backend.put("k", io.BytesIO(data), size=len(data))
    assert backend._client_obj is None  # botocore was never needed

    heads = [r.split(b"\r\n\r\n")[0].decode() for r in server.requests]
    lines = [h.split("\r\n")[0] for h in heads]
    assert lines == [
        "POST /b/p/k?uploads= HTTP/1.1",
        "PUT /b/p/k?partNumber=1&uploadId=up%2F1%2B2 HTTP/1.1",
        "PUT /b/p/k?partNumber=2&uploadId=up%2F1%2B2 HTTP/1.1",
        "POST /b/p/k?uploadId=up%2F1%2B2 HTTP/1.1",
    ] * 2 + ["DELETE /b/p/k?uploadId=up%2F1%2B2 HTTP/1.1"]
    assert "x-amz-meta-xxh3: ab" in heads[0].lower()
    complete = server.requests[3].split(b"\r\n\r\n", 1)[1]
    assert complete.count(b"<ETag>\"e&amp;1\"</ETag>") == 2
    assert b"<PartNumber>1</PartNumber>" in complete and b"<PartNumber>2</PartNumber>" in complete
    assert [len(r.split(b"\r\n\r\n", 1)[1]) for r in server.requests[1:3]] == [5 * 2**20, 2**20]
