"""A Redis server that speaks only TLS, with a certificate of a private CA made for the test."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.services import free_port


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_certificates(root: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for localhost and 127.0.0.1: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provisioner test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = root / "ca.pem", root / "server.pem", root / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, paths[2])
    return paths


class TlsRedis:
    """`redis-server` on a TLS port only (clients need no certificate of their own)."""

    def __init__(self, binary: str, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.ca, cert, key = make_certificates(root)
        self.port = free_port()
        log = open(root / "redis-tls.log", "ab")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(cert), "--tls-key-file", str(key),
             "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
             "--save", "", "--appendonly", "no", "--dir", str(root)],
            stdout=log, stderr=log, start_new_session=True)
        self.trusted = redis.Redis(host="localhost", port=self.port, ssl=True,
                                   ssl_ca_certs=str(self.ca), socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.trusted.ping()
                break
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"TLS Redis did not start; see {root / 'redis-tls.log'}")
                time.sleep(0.05)

    def url(self, query: str = "") -> str:
        return f"rediss://localhost:{self.port}/0" + (f"?{query}" if query else "")

    def close(self) -> None:
        self.trusted.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
