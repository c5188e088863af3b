"""Every Redis connection the project makes, built from the settings in one place.

Redis is either one URL (`PROVISIONER_REDIS_URL`, or the embedded server) or a master found
through Redis Sentinel (`PROVISIONER_REDIS_SENTINELS`, `PROVISIONER_REDIS_SENTINEL_MASTER`).
`RedisTarget` gives each user the form its library wants: redis-py clients (budgets, wake-ups,
metrics, `/readyz`), an asyncio client (the API's status subscription), a `limits` storage
(the API's rate limits, the provider budgets) and Celery's broker options (kombu's `redis` or
`sentinel` transport).

With Sentinel, the URL, if given, says how to talk to the master: its password, database and
TLS (`rediss://`); its host is ignored (write the master's name there). The sentinels are
spoken to over TLS too when the URL is `rediss://`, with the same certificate options, and
with `PROVISIONER_REDIS_SENTINEL_PASSWORD` if they require one.

`rediss://` verifies the server's certificate everywhere unless the URL's `ssl_cert_reqs`
says otherwise: redis-py and `limits` do by default; kombu does not (it warns and turns
verification off when a `rediss://` URL carries no `ssl_*` option), so the broker options
here ask for `CERT_REQUIRED`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.connection import parse_url

from worker.settings import Settings, parse_sentinels

# The query options of a `rediss://` URL that configure TLS (redis-py's names, which kombu's
# and `limits`' Redis transports pass through to redis-py).
SSL_OPTIONS = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_ca_data",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def target_of(where: str | RedisTarget) -> RedisTarget:
    """A target from a URL (tests, benchmarks) or the target itself."""
    return where if isinstance(where, RedisTarget) else RedisTarget(where)


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: `url` alone, or the master `master` watched by `sentinels`."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    sentinel_password: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTarget:
        sentinels = parse_sentinels(settings.redis_sentinels)
        if sentinels:
            return cls(
                settings.redis_url or "redis://",
                sentinels,
                settings.redis_sentinel_master,
                settings.redis_sentinel_password.get_secret_value(),
            )
        from worker.embedded_redis import redis_url

        return cls(redis_url(settings))

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    # --- redis-py -----------------------------------------------------------------------

    def client(self, **options: Any) -> redis.Redis:
        """A redis-py client (its pool connects on first use; with Sentinel, to whichever
        server the sentinels name master at that moment, again after each failure)."""
        if not self.sentinels:
            return redis.Redis.from_url(self.url, **options)
        sentinel = redis.sentinel.Sentinel(
            list(self.sentinels),
            sentinel_kwargs=self._sentinel_kwargs(options),
            **self._master_kwargs(),
            **options,
        )
        return sentinel.master_for(self.master)

    def async_client(self, **options: Any) -> redis.asyncio.Redis:
        """`client` for asyncio (the API's status subscription)."""
        if not self.sentinels:
            return redis.asyncio.Redis.from_url(self.url, **options)
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(self.sentinels),
            sentinel_kwargs=self._sentinel_kwargs(options),
            **self._master_kwargs(),
            **options,
        )
        return sentinel.master_for(self.master)

    @staticmethod
    async def aclose(client: redis.asyncio.Redis) -> None:
        """Close an `async_client`, and behind Sentinel its connections to the sentinels
        (which closing the master's client leaves open)."""
        await client.aclose()
        manager = getattr(client.connection_pool, "sentinel_manager", None)
        if manager is not None:
            await manager.aclose()

    # --- limits -------------------------------------------------------------------------

    def limits_storage(self, **options: Any) -> tuple[str, dict[str, Any]]:
        """The `limits` storage URI and options (for `storage_from_string(uri, **options)`)."""
        if not self.sentinels:
            if self.url.startswith("unix://"):  # `limits` spells it `redis+unix://`
                return "redis+unix://" + self.url.removeprefix("unix://"), options
            return self.url, options
        hosts = ",".join(_netloc(h, p) for h, p in self.sentinels)
        return f"redis+sentinel://{hosts}/{quote(self.master, safe='')}", {
            **self._master_kwargs(),
            **options,
            "sentinel_kwargs": self._sentinel_kwargs(options, explicit_auth=True),
            # Budgets and limits read what they wrote: a replica may lag behind the master.
            "use_replicas": False,
        }

    # --- Celery (kombu) -----------------------------------------------------------------

    def celery_options(self) -> dict[str, Any]:
        """`broker_url`, and the transport and TLS options the broker needs."""
        if not self.sentinels:
            url = self.url
            if url.startswith("unix://"):  # kombu spells it `redis+socket://`
                url = "redis+socket://" + url.removeprefix("unix://")
            options: dict[str, Any] = {"broker_url": url, "broker_transport_options": {}}
            if self.tls:
                # Used unless the URL carries `ssl_*` options of its own (kombu's URL wins).
                options["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
            return options
        master = self._master_kwargs()
        auth = ""
        if master.get("password"):
            auth = f"{quote(master.get('username') or '', safe='')}:"
            auth += f"{quote(master['password'], safe='')}@"
        db = master.get("db", 0)
        url = ";".join(f"sentinel://{auth}{_netloc(h, p)}/{db}" for h, p in self.sentinels)
        options = {
            "broker_url": url,
            "broker_transport_options": {
                "master_name": self.master,
                "sentinel_kwargs": self._sentinel_kwargs({"socket_timeout": 2}),
            },
        }
        if self.tls:
            options["broker_use_ssl"] = self._ssl_options()
        return options

    # --- the parts ----------------------------------------------------------------------

    def _parsed(self) -> dict[str, Any]:
        return dict(parse_url(self.url)) if self.url not in ("redis://", "") else {}

    def _db(self) -> int:
        return int(self._parsed().get("db") or 0)

    def _ssl_options(self) -> dict[str, Any]:
        """The URL's TLS options, verifying the certificate unless they say otherwise."""
        query = dict(parse_qsl(urlsplit(self.url).query))
        found: dict[str, Any] = {k: v for k, v in query.items() if k in SSL_OPTIONS}
        reqs = found.get("ssl_cert_reqs")
        found["ssl_cert_reqs"] = {
            None: ssl.CERT_REQUIRED,
            "required": ssl.CERT_REQUIRED,
            "optional": ssl.CERT_OPTIONAL,
            "none": ssl.CERT_NONE,
        }.get(reqs.lower() if isinstance(reqs, str) else reqs, ssl.CERT_REQUIRED)
        if "ssl_check_hostname" in found:
            found["ssl_check_hostname"] = found["ssl_check_hostname"].lower() not in (
                "false",
                "0",
                "no",
            )
        return found

    def _master_kwargs(self) -> dict[str, Any]:
        """The master's connection options from the URL (its host and port are the
        sentinels' to give)."""
        kwargs: dict[str, Any] = {"db": self._db()}
        parsed = self._parsed()
        for name in ("username", "password"):
            if parsed.get(name):
                kwargs[name] = parsed[name]
        if self.tls:
            kwargs["ssl"] = True
            kwargs.update(self._ssl_options())
        return kwargs

    def _sentinel_kwargs(
        self, options: dict[str, Any], *, explicit_auth: bool = False
    ) -> dict[str, Any]:
        """How to talk to the sentinels themselves: the same timeouts and TLS as the master,
        their own password (none unless set; never the master's)."""
        kwargs: dict[str, Any] = {
            k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")
        }
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        elif explicit_auth:  # `limits` would otherwise send the master's password to them
            kwargs.update(username=None, password=None)
        if self.tls:
            kwargs["ssl"] = True
            kwargs.update(self._ssl_options())
        return kwargs
