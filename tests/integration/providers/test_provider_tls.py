"""Provider clients verify the server's certificate with one TLS context they all share: a
server whose certificate no trusted CA signed is refused; the same server is reached once
`SSL_CERT_FILE` names its CA (checked in a new process, since the context is built once)."""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.tls import make_certificates

from worker.providers.http import build_client, make_timeout, tls_context, transport_errors
from worker.providers.errors import Retryable


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path):
    ca, cert, key = make_certificates(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()


def test_an_untrusted_certificate_is_refused_and_its_ca_trusted_through_ssl_cert_file(
    https_server,
):
    url, ca = https_server
    client = build_client(base_url=url, timeout=make_timeout(2, 2), max_connections=2)
    with pytest.raises(Retryable) as refused, transport_errors("twilio"), client:
        client.get("/")
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    # Every client shares the one context (built once per process, not per thread).
    other = build_client(base_url=url, timeout=make_timeout(2, 2), max_connections=2)
    assert other._transport._pool._ssl_context is tls_context()  # noqa: SLF001

    probe = (
        "from worker.providers.http import build_client, make_timeout\n"
        f"c = build_client(base_url={url!r}, timeout=make_timeout(2, 2), max_connections=2)\n"
        "print(c.get('/').json())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SSL_CERT_FILE": str(ca)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'ok': True}"
