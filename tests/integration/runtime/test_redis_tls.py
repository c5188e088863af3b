"""`rediss://` verifies the server's certificate by default, against a real TLS Redis whose
certificate comes from a private CA: refused without that CA, accepted with it, for the
broker (kombu), redis-py and the `limits` storage alike."""

from __future__ import annotations

import shutil

import pytest
import redis
from celery import Celery
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from support.services import IN_CI
from support.tls import TlsRedis

from worker.redis_conn import RedisTarget
from worker.runtime.celery_app import CeleryPublisher, create_celery
from worker.settings import Settings


@pytest.fixture
def tls_redis(tmp_path):
    binary = shutil.which("redis-server")  # Debian's is built with TLS (the wheel's is not)
    if binary is None:
        if IN_CI:
            raise RuntimeError("redis-server (Debian's redis-server package) is required in CI")
        pytest.skip("needs Debian's redis-server (built with TLS): apt-get install redis-server")
    server = TlsRedis(binary, tmp_path / "tls")
    yield server
    server.close()


def test_the_broker_refuses_an_unverified_certificate_and_accepts_a_trusted_one(tls_redis):
    unverified = CeleryPublisher(create_celery(Settings(), broker_url=tls_redis.url()))
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        unverified.provision("ct_untrusted", queue="interactive")
    assert tls_redis.trusted.llen("interactive") == 0

    trusted_url = tls_redis.url(f"ssl_ca_certs={tls_redis.ca}")
    CeleryPublisher(create_celery(Settings(), broker_url=trusted_url)).provision(
        "ct_trusted", queue="interactive"
    )
    assert tls_redis.trusted.llen("interactive") == 1


def test_celery_left_to_itself_would_not_have_checked(tls_redis):
    # Why create_celery sets broker_use_ssl: kombu's own default for rediss:// is CERT_NONE.
    Celery(broker=tls_redis.url()).send_task("anything", queue="interactive")
    assert tls_redis.trusted.llen("interactive") == 1


def test_redis_py_and_limits_refuse_an_unverified_certificate(tls_redis):
    untrusted = RedisTarget(tls_redis.url())
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.client(socket_timeout=1).ping()
    uri, options = untrusted.limits_storage(socket_timeout=1)
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        MovingWindowRateLimiter(storage_from_string(uri, **options)).hit(parse("5/minute"), "k")

    trusted = RedisTarget(tls_redis.url(f"ssl_ca_certs={tls_redis.ca}"))
    assert trusted.client(socket_timeout=1).ping()
    uri, options = trusted.limits_storage(socket_timeout=1)
    assert MovingWindowRateLimiter(storage_from_string(uri, **options)).hit(parse("5/minute"), "k")
