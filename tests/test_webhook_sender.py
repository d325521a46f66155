"""One delivery attempt against receivers of the test's own, all on loopback: the pinned address,
redirects, the deadline, the response cap and TLS verified for the URL's host name."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taskservice.webhooks.destinations import Destination
from taskservice.webhooks.sender import MAX_RESPONSE_BYTES, Sender


class Receiver:
    """A loopback HTTP server whose handler the test writes; it records each request."""

    def __init__(self, handle, tls: ssl.SSLContext | None = None):
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length),
                    }
                )
                handle(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def answer(status: int, body: bytes = b"", headers: dict | None = None):
    def handle(handler):
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return handle


def to(receiver: Receiver, host: str = "127.0.0.1", scheme: str = "http") -> Destination:
    return Destination(scheme, host, receiver.port, "/hook?x=1", "127.0.0.1")


@pytest.fixture
def receivers():
    made = []

    def make(handle, tls=None):
        made.append(Receiver(handle, tls))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def test_posts_to_the_checked_address_with_the_urls_host(receivers):
    receiver = receivers(answer(204))
    # The name is never resolved again: the connection goes to the address checked before.
    destination = to(receiver, host="hooks.example.com")
    attempt = Sender(5).post(destination, b'{"a":1}', {"webhook-id": "msg_1"})
    assert (attempt.status_code, attempt.delivered, attempt.error) == (204, True, None)
    [request] = receiver.requests
    assert request["path"] == "/hook?x=1"
    assert request["headers"]["Host"] == f"hooks.example.com:{receiver.port}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["webhook-id"] == "msg_1"
    assert request["body"] == b'{"a":1}'


def test_a_redirect_is_not_followed(receivers):
    target = receivers(answer(200))
    redirecting = receivers(
        answer(302, headers={"Location": f"http://127.0.0.1:{target.port}/elsewhere"})
    )
    attempt = Sender(5).post(to(redirecting), b"{}", {})
    assert (attempt.status_code, attempt.delivered) == (302, False)
    assert target.requests == []


def test_a_non_2xx_answer_is_not_a_delivery(receivers):
    attempt = Sender(5).post(to(receivers(answer(500, b"oops"))), b"{}", {})
    assert (attempt.status_code, attempt.delivered) == (500, False)


def test_a_refused_connection_is_a_failed_attempt():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        attempt = Sender(5).post(Destination("http", "127.0.0.1", port, "/", "127.0.0.1"), b"", {})
    assert attempt.status_code is None and "ConnectionRefused" in attempt.error


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline(receivers):
    def drip(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        try:
            for _ in range(100):  # a header byte every 0.2 s: each read succeeds, never the whole
                handler.wfile.write(b"X")
                handler.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the sender hung up at its deadline

    attempt = Sender(1.0).post(to(receivers(drip)), b"{}", {})
    assert attempt.status_code is None
    assert attempt.error.startswith("no complete answer within")


def test_only_the_first_64_kib_of_an_answer_are_read(receivers):
    sent = threading.Event()

    def endless(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(100 * MAX_RESPONSE_BYTES))
        handler.end_headers()
        try:
            for _ in range(100):
                handler.wfile.write(b"x" * MAX_RESPONSE_BYTES)
        except OSError:
            sent.set()  # the sender closed the connection instead of reading on

    attempt = Sender(5).post(to(receivers(endless)), b"{}", {})
    assert attempt.delivered
    assert sent.wait(5)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for hooks.example.com, and a client context trusting it."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", key, "-out", cert, "-subj", "/CN=hooks.example.com",
         "-addext", "subjectAltName=DNS:hooks.example.com"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_https_to_the_pinned_address_verifies_the_certificate_for_the_host(receivers, certificate):
    server, client = certificate
    receiver = receivers(answer(200), tls=server)
    good = Sender(5, tls=client).post(to(receiver, "hooks.example.com", "https"), b"{}", {})
    assert good.delivered
    # The same address under another name: the certificate does not name it, so no request.
    wrong = Sender(5, tls=client).post(to(receiver, "other.example.com", "https"), b"{}", {})
    assert wrong.status_code is None and "certificate" in wrong.error.lower()
    assert len(receiver.requests) == 1
