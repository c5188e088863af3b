"""The Redis options derived from the settings: TLS verified by default for every library,
Sentinel's master and sentinels each given their own credentials. Pure construction: nothing
here connects (the failover itself: tests/integration/runtime/test_sentinel_failover.py)."""

from __future__ import annotations

import ssl

import pytest
from limits.storage import storage_from_string
from pydantic import ValidationError

from worker.redis_conn import RedisTarget
from worker.runtime.celery_app import create_celery
from worker.settings import Settings

SENTINELS = (("10.0.0.1", 26379), ("10.0.0.2", 26380))


def broker_ssl(url: str):
    """What kombu will use for the broker's TLS, from the app we configure."""
    return create_celery(Settings(), broker_url=url).connection_for_write().ssl


def test_kombu_verifies_a_rediss_broker_unless_the_url_says_otherwise():
    assert broker_ssl("rediss://:pw@redis.internal:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    # Celery left alone: kombu turns verification off for a bare rediss:// URL.
    from celery import Celery

    assert Celery(broker="rediss://redis.internal/0").connection_for_write().ssl == {
        "ssl_cert_reqs": ssl.CERT_NONE
    }
    assert broker_ssl("rediss://redis.internal/0?ssl_cert_reqs=none") == {
        "ssl_cert_reqs": ssl.CERT_NONE
    }
    assert not broker_ssl("redis://redis.internal/0")


def test_redis_py_and_limits_verify_a_rediss_url():
    target = RedisTarget("rediss://:pw@redis.internal:6380/1")
    connection = target.client().connection_pool.make_connection()  # not connected
    assert connection.cert_reqs == ssl.CERT_REQUIRED and connection.check_hostname
    uri, options = target.limits_storage(socket_timeout=0.5)
    storage = storage_from_string(uri, **options)
    assert storage.storage.connection_pool.make_connection().cert_reqs == ssl.CERT_REQUIRED
    relaxed = RedisTarget("rediss://redis.internal/1?ssl_cert_reqs=none").client()
    assert relaxed.connection_pool.make_connection().cert_reqs == ssl.CERT_NONE


def test_unix_socket_urls_are_spelled_for_each_library():
    target = RedisTarget("unix:///var/run/redis.sock?db=2")
    assert target.celery_options()["broker_url"] == "redis+socket:///var/run/redis.sock?db=2"
    assert target.limits_storage()[0] == "redis+unix:///var/run/redis.sock?db=2"


def test_sentinel_broker_options_name_every_sentinel_and_the_master():
    target = RedisTarget("redis://:s%40cret@mymaster/3", SENTINELS, "mymaster", "sentinel-pw")
    options = target.celery_options()
    assert options["broker_url"] == (
        "sentinel://:s%40cret@10.0.0.1:26379/3;sentinel://:s%40cret@10.0.0.2:26380/3"
    )
    assert options["broker_transport_options"] == {
        "master_name": "mymaster",
        "sentinel_kwargs": {"socket_timeout": 2, "password": "sentinel-pw"},
    }
    assert "broker_use_ssl" not in options
    app = create_celery(Settings(), redis=target)
    conf = app.conf
    assert conf.broker_transport_options["master_name"] == "mymaster"
    assert conf.broker_transport_options["visibility_timeout"] == 3600  # ours, kept
    connection = app.connection_for_write()
    assert connection.transport_cls == "sentinel" and connection.password == "s@cret"
    assert connection.virtual_host == "3"


def test_sentinel_over_tls_verifies_master_and_sentinels():
    target = RedisTarget("rediss://:pw@mymaster/0?ssl_ca_certs=/etc/ca.pem", SENTINELS, "m")
    options = target.celery_options()
    assert options["broker_use_ssl"] == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": "/etc/ca.pem",
    }
    assert options["broker_transport_options"]["sentinel_kwargs"]["ssl_cert_reqs"] == (
        ssl.CERT_REQUIRED
    )
    client = target.client(socket_timeout=0.5)
    master = client.connection_pool.make_connection()
    assert type(master).__name__ == "SentinelManagedSSLConnection"
    assert master.cert_reqs == ssl.CERT_REQUIRED and master.ca_certs == "/etc/ca.pem"
    sentinel = client.connection_pool.sentinel_manager.sentinels[0]
    assert sentinel.connection_pool.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_sentinels_never_get_the_masters_password():
    target = RedisTarget("redis://:master-pw@mymaster/2", SENTINELS, "mymaster")
    client = target.client()
    assert client.connection_pool.connection_kwargs["password"] == "master-pw"
    assert client.connection_pool.connection_kwargs["db"] == 2
    for node in client.connection_pool.sentinel_manager.sentinels:
        assert node.connection_pool.connection_kwargs.get("password") is None
    uri, options = target.limits_storage()
    assert uri == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster"
    storage = storage_from_string(uri, **options)
    assert storage.storage.connection_pool.connection_kwargs["password"] == "master-pw"
    for node in storage.sentinel.sentinels:
        assert node.connection_pool.connection_kwargs.get("password") is None
    assert storage.use_replicas is False  # a replica may lag behind what was just counted


def test_settings_name_the_sentinel_variable_that_is_wrong():
    with pytest.raises(ValidationError, match="PROVISIONER_REDIS_SENTINEL_MASTER"):
        Settings(redis_sentinels="10.0.0.1:26379")
    with pytest.raises(ValidationError, match="redis_sentinels"):
        Settings(redis_sentinels="10.0.0.1", redis_sentinel_master="m")
    settings = Settings(redis_sentinels="10.0.0.1:26379, [::1]:26380", redis_sentinel_master="m")
    assert RedisTarget.from_settings(settings).sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    target = RedisTarget.from_settings(settings)
    assert target.celery_options()["broker_url"] == (
        "sentinel://10.0.0.1:26379/0;sentinel://[::1]:26380/0"
    )
    assert target.limits_storage()[0] == "redis+sentinel://10.0.0.1:26379,[::1]:26380/m"
