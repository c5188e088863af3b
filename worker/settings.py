"""The one configuration object: every `PROVISIONER_*` variable, read once and passed down."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Svix's schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_WEBHOOK_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)


def parse_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (`[v6]:port` for IPv6) as pairs; ValueError naming the bad part."""
    found: list[tuple[str, int]] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not host:port (e.g. 10.0.0.5:26379)")
        found.append((host, int(port)))
    return tuple(found)


# The WABA the provider sandbox registers at every reset (sandbox/state.py, DEFAULT_WABA_ID).
SANDBOX_WABA_ID = "100000000000001"


class Settings(BaseSettings):
    """Configuration of every component. Nothing else in the project reads the environment."""

    model_config = SettingsConfigDict(env_prefix="PROVISIONER_", extra="ignore", frozen=True)

    # `production` refuses to start on the development defaults (worker/production.py).
    env: Literal["development", "production"] = "development"

    # Storage and broker.
    var_dir: Path = Path("var")
    database_url: str = ""
    redis_url: str = ""  # empty: an embedded Redis under var_dir (see worker.embedded_redis)
    # Redis Sentinel (worker/redis_conn.py): `host:port,...` of the sentinels and the name of
    # the master they watch. Set, every Redis user finds the master through them, and
    # redis_url gives only the master's password, database and TLS (`rediss://`).
    redis_sentinels: str = ""
    redis_sentinel_master: str = ""
    redis_sentinel_password: SecretStr = SecretStr("")  # the sentinels' own, if they ask

    # Providers. PROVISIONER_SANDBOX_URL, when set, points all three at one sandbox.
    sandbox_url: str = ""
    twilio_api_url: str = "https://api.twilio.com"
    twilio_messaging_url: str = "https://messaging.twilio.com"
    # Twilio's Regulatory Compliance API (bundles, regulations); addresses are on the REST API.
    twilio_numbers_url: str = "https://numbers.twilio.com"
    # The platform's regulatory documents, for accounts that have none of their own: JSON,
    # `{"GB/local": {"bundle_sid": "BU...", "address_sid": "AD...", "address_country": "GB"}}`.
    twilio_regulatory_defaults: dict[str, dict[str, str]] = {}
    # Twilio's Regulations, fetched by beat's `refresh-regulations` and cached in the database
    # (worker/app/regulations.py): an entry older than TTL is fetched again; one older than
    # MAX_AGE (or stale: a purchase Twilio refused since) is not trusted, and the built-in
    # table judges instead. Each pass fetches at most PER_PASS country/number-type pairs
    # (two Twilio requests each) of COUNTRIES plus the countries of the latest RECENT phone
    # contacts. The API reloads its in-memory copy every RELOAD seconds.
    twilio_regulations_ttl_s: float = 86400.0
    twilio_regulations_max_age_s: float = 7 * 86400.0
    twilio_regulations_interval_s: float = 300.0
    twilio_regulations_countries: str = "US,CA,GB,DE,FR,AU,IE"
    twilio_regulations_per_pass: int = 20
    twilio_regulations_recent: int = 1000
    twilio_regulations_reload_s: float = 30.0
    google_directory_url: str = "https://admin.googleapis.com"
    twilio_account_sid: str = "AC00000000000000000000000000000000"
    twilio_auth_token: SecretStr = SecretStr("")
    # With an API key (SK...), the key's SID is the basic-auth user and the token its secret.
    twilio_api_key_sid: str = ""
    whatsapp_profile_name: str = "Assistant"
    # The platform's WhatsApp Business Account, shared with Twilio: WhatsApp senders are
    # registered under it unless the account set its own (PUT /v0/providers/whatsapp). Empty:
    # no waba_id is sent (Twilio then uses the WABA linked to the Twilio account); with
    # PROVISIONER_SANDBOX_URL, the WABA the sandbox registers at every reset.
    twilio_waba_id: str = ""
    google_access_token: SecretStr = SecretStr("")  # static bearer token; see docs/providers.md
    # A service account key (a file, or its JSON) with domain-wide delegation, and the admin it
    # acts as; when set, these replace the static token (docs/providers.md).
    google_service_account_file: Path | None = None
    google_service_account_json: SecretStr = SecretStr("")
    google_admin_subject: str = ""
    google_token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
    microsoft_graph_url: str = "https://graph.microsoft.com"
    microsoft_login_url: str = "https://login.microsoftonline.com"
    # Fernet keys (comma-separated, newest first) that encrypt provider connection secrets;
    # empty: a key kept in var_dir/secret.key (made on first use; the dev stack's way).
    secret_keys: SecretStr = SecretStr("")
    # Provider connections whose clients (and token caches) one worker process keeps.
    connection_cache_size: int = 256
    provider_connect_timeout_s: float = 5.0
    provider_read_timeout_s: float = 20.0
    provider_max_connections: int = 100
    # TwiML URL that forwards a call; `{user_phone}` is replaced (URL-encoded) by the number.
    voice_forward_url: str = "https://twimlets.com/forward?PhoneNumber={user_phone}"
    email_domain: str = "assistants.example.com"

    # Pricing, in the account's currency, as decimals.
    setup_cost_phone: Decimal = Decimal("1.00")
    setup_cost_email: Decimal = Decimal("0.50")
    setup_cost_whatsapp: Decimal = Decimal("2.00")
    # Monthly fees, charged for every UTC calendar month a contact is live (0: no fee). The
    # defaults are the original service's: a number's rent, a WhatsApp sender, a mailbox.
    monthly_cost_phone: Decimal = Decimal("1.50")
    monthly_cost_email: Decimal = Decimal("14.00")
    monthly_cost_whatsapp: Decimal = Decimal("5.00")
    grace_period_days: int = 14  # unpaid fees: this long in grace_period, then deleted
    billing_interval_s: float = 3600.0  # beat's billing pass (the month's fees, grace ends)

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # How long the API keeps an idle client connection open. uvicorn's default (5 s) is httpx's
    # pool expiry too: a client reused a pooled connection just as the server closed it and got
    # ECONNRESET. Longer than a load balancer's idle timeout (AWS ALB: 60 s), so the balancer,
    # not the API, closes first.
    api_keep_alive_s: int = 75
    sandbox_port: int = 8900  # where `make run` serves the provider sandbox
    max_body_bytes: int = 64 * 1024
    rate_limit: str = "100/second"  # per API key; `limits` notation, e.g. "20/second;1000/minute"
    idempotency_ttl_s: int = 24 * 3600
    idempotency_lock_s: int = 60  # an in-flight record older than this is taken over

    # Batches (POST /v0/contact/batch): items per batch, and the batch route's body limit.
    batch_max_items: int = 1000
    max_batch_body_bytes: int = 1024 * 1024

    # Provider rate budgets, shared by every worker through Redis (worker/runtime/budgets.py):
    # `;`-separated NAME=RATE, NAME a provider (`twilio`, `google`, `microsoft`) or
    # `provider.operation` (number_search, number_buy, number_read, number_delete,
    # sender_create, sender_fetch, sender_delete, user_insert, user_get, user_delete,
    # license_assign, sku_read), RATE e.g. 50/second or 600/minute. A budget holds for each
    # provider connection apart (the platform's Twilio account, each customer's tenant).
    # Empty: no budget (the providers' own 429s still pause every worker).
    provider_rate_limits: str = ""
    # The part of each budget that batch (bulk) work may use; the rest stays for interactive.
    provider_bulk_share: float = 0.8
    # Requests in flight at most per provider connection, across every worker: `;`-separated
    # PROVIDER=COUNT, e.g. `twilio=20` (set it at or below the Twilio account's concurrency
    # limit, which answers 20429 beyond it). Empty: no cap. A request that finds no free slot
    # waits for one up to provider_concurrency_wait_s, then comes back later (not a failure).
    provider_concurrency: str = ""
    provider_concurrency_wait_s: float = 5.0

    # Number candidates shared by every worker in Redis: one AvailablePhoneNumbers search of
    # number_pool_search_size serves that many purchases; a background search tops the pool
    # up below number_pool_low_water; a candidate older than number_pool_max_age_s is not
    # offered (someone else may have bought it). When the pool is empty, the takers wait up
    # to number_pool_wait_s for the one searching, then search themselves. Off: each contact
    # searches for itself (a search and a purchase per number).
    number_pool: bool = True
    number_pool_search_size: int = Field(default=50, ge=1, le=1000)
    number_pool_low_water: int = Field(default=50, ge=0)
    number_pool_max_age_s: float = Field(default=300.0, gt=0)
    number_pool_wait_s: float = Field(default=2.0, ge=0)

    # Pipeline.
    lease_s: int = 120
    step_max_attempts: int = 8
    step_max_total_s: int = 900
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    max_deliveries: int = 5  # leases taken over from dead runners before a contact fails
    reconcile_interval_s: float = 30.0
    # A contact with no runner and no scheduled retry is re-enqueued once it has waited this
    # long (a publish lost after commit, a flushed broker, a killed worker).
    reconcile_grace_s: float = 60.0
    reconcile_batch: int = 500
    sender_poll_s: float = 2.0
    # A sender still being created is polled every sender_poll_s * 1.5^n, up to this.
    sender_poll_max_s: float = 15.0
    sender_online_timeout_s: int = 600
    # TWILIO_REVIEW (Twilio's and Meta's review of a sender) is polled with a backoff from
    # sender_poll_s up to sender_review_poll_max_s, and fails the contact after this long.
    sender_review_timeout_s: int = 259_200  # 3 days
    sender_review_poll_max_s: float = 300.0
    # The shared pool of WhatsApp senders (docs/providers.md, "The shared pool"): a contact
    # gets a dedicated sender while its account's own WABA has fewer live dedicated senders
    # than this (Meta's cap with business verification), else a pool sender.
    whatsapp_own_waba_max_senders: int = Field(default=20, ge=0)
    # Senders the platform's pool may hold under the platform's WABA.
    whatsapp_pool_max_senders: int = Field(default=20, ge=0)
    # Where the pool's numbers are bought (a country whose numbers need no documents).
    whatsapp_pool_country: str = "US"
    # A pool contact whose sender is not online this long after it first looked fails
    # `whatsapp_pool_timeout`; a contact waiting for another's growing sender polls the
    # database from sender_poll_s doubling up to whatsapp_pool_poll_max_s.
    whatsapp_pool_wait_s: int = Field(default=600, gt=0)
    whatsapp_pool_poll_max_s: float = Field(default=30.0, gt=0)
    # A clean-up (a failed contact's compensation, a deleted one's release) that meets a
    # permanent error (refused credentials, a forbidden account) is stuck: retried at this
    # cadence instead of the backoff's, until the cause is fixed.
    compensation_stuck_retry_s: float = 900.0

    # Worker liveness: each worker process records a heartbeat this often; beat's liveness
    # check (every `liveness_interval_s`) takes over the leases of a runner whose heartbeat is
    # older than `worker_dead_after_s`, without waiting for the lease to expire.
    worker_heartbeat_s: float = 3.0
    worker_dead_after_s: float = 15.0
    liveness_interval_s: float = 5.0
    # Fencing (docs/recovery.md): a runner whose lease was last confirmed longer ago than this
    # (a long GC pause, a frozen VM) renews it before a creating request or a compensation,
    # and stops if it lost it. Far below `worker_dead_after_s`, the least a lease can be lost in.
    lease_recheck_s: float = 1.0
    # PostgreSQL, worker and beat sessions: a statement waits this long for a lock at most, and
    # a session idle inside a transaction this long is ended by the server (its locks freed):
    # a frozen runner cannot hold a contact's row against the liveness takeover. 0: no bound.
    db_lock_timeout_ms: int = 5_000
    db_idle_in_transaction_timeout_ms: int = 10_000
    # The sweep (beat): a contact that ended (failed, deleted) or went active this long ago has
    # its tag listed at the providers once more, and what it should not hold released.
    sweep_interval_s: float = 30.0
    sweep_after_s: float = 60.0
    sweep_batch: int = 100
    # /readyz asks each provider whether it accepts the configured credentials this often.
    provider_check_interval_s: float = 60.0

    # The API as its clients reach it (`provisioner onboard`); empty URL: api_host:api_port.
    api_url: str = ""
    api_key: SecretStr = SecretStr("")

    # Webhooks.
    webhook_retry_schedule: Annotated[tuple[int, ...], NoDecode] = DEFAULT_WEBHOOK_SCHEDULE
    webhook_allow_private: bool = False
    webhook_timeout_s: float = 10.0
    webhook_relay_interval_s: float = 5.0  # beat's relay: due retries, lost deliveries
    # An event or retry whose task has not run this long after it was due is published again.
    webhook_relay_grace_s: float = 30.0
    webhook_secret_grace_s: int = 24 * 3600  # a rotated-out secret keeps signing this long

    # Retention (beat's hourly job, worker/app/retention.py): webhook delivery attempts older
    # than this many days are deleted (their delivery, the event and the ledger are kept), and
    # idempotency keys once expired; `retention_chunk` rows per transaction.
    webhook_attempt_retention_days: int = 30
    retention_chunk: int = 5000

    # Metrics: a worker serves its Prometheus metrics on this port (0: off; the API serves
    # them at /metrics).
    worker_metrics_port: int = 0
    worker_metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from other hosts

    # The operators' console at /console/: off (404) while empty; its sign-in token otherwise.
    console_token: SecretStr = SecretStr("")
    # A console session lasts this long from sign-in (signing out ends it sooner), and each
    # client address may try this many sign-ins (`limits` notation) before a 429.
    console_session_s: int = 12 * 3600
    console_sign_in_limit: str = "5/minute"

    # Logging.
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"

    # OpenTelemetry tracing (worker/tracing.py), under the standard OTEL_* names, not
    # PROVISIONER_*: off while the endpoint is empty. Read here like every other setting and
    # passed to the SDK (which reads no environment of its own here).
    otel_exporter_otlp_endpoint: str = Field(
        "",
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_exporter_otlp_endpoint"),
    )
    otel_exporter_otlp_headers: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_HEADERS", "otel_exporter_otlp_headers"),
    )
    otel_service_name: str = Field(
        "", validation_alias=AliasChoices("OTEL_SERVICE_NAME", "otel_service_name")
    )
    otel_traces_sampler_arg: float = Field(
        1.0, validation_alias=AliasChoices("OTEL_TRACES_SAMPLER_ARG", "otel_traces_sampler_arg")
    )

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                parts = tuple(int(p) for p in value.replace(" ", "").split(",") if p)
            except ValueError as exc:
                raise ValueError("must be comma-separated whole seconds, e.g. 5,300,1800") from exc
            if any(p < 0 for p in parts):
                raise ValueError("delays must not be negative")
            return parts
        return value

    @field_validator("provider_rate_limits")
    @classmethod
    def _check_budgets(cls, value: str) -> str:
        from worker.domain.ratelimit import parse_budgets

        parse_budgets(value)  # ValueError names what is wrong
        return value

    @field_validator("provider_concurrency")
    @classmethod
    def _check_caps(cls, value: str) -> str:
        from worker.domain.ratelimit import parse_caps

        parse_caps(value)  # ValueError names what is wrong
        return value

    @field_validator("twilio_regulatory_defaults")
    @classmethod
    def _check_regulatory_defaults(
        cls, value: dict[str, dict[str, str]]
    ) -> dict[str, dict[str, str]]:
        from worker.domain.regulatory import NUMBER_TYPES

        checked: dict[str, dict[str, str]] = {}
        for key, docs in value.items():
            country, _, kind = key.partition("/")
            if len(country) != 2 or kind not in NUMBER_TYPES:
                raise ValueError(f"{key!r}: keys are COUNTRY/TYPE, e.g. GB/local")
            unknown = set(docs) - {"bundle_sid", "address_sid", "address_country"}
            if unknown:
                raise ValueError(f"{key!r}: unknown field(s) {', '.join(sorted(unknown))}")
            checked[f"{country.upper()}/{kind}"] = {
                k: (v.upper() if k == "address_country" else v) for k, v in docs.items()
            }
        return checked

    @field_validator("twilio_regulations_countries")
    @classmethod
    def _check_regulation_countries(cls, value: str) -> str:
        codes = [c.strip().upper() for c in value.split(",") if c.strip()]
        bad = [c for c in codes if len(c) != 2 or not c.isalpha()]
        if bad:
            raise ValueError(f"{', '.join(bad)}: comma-separated ISO country codes, e.g. GB,DE")
        return ",".join(codes)

    @field_validator(
        "twilio_regulations_ttl_s",
        "twilio_regulations_max_age_s",
        "twilio_regulations_interval_s",
        "twilio_regulations_per_pass",
        "twilio_regulations_reload_s",
    )
    @classmethod
    def _check_positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be above 0")
        return value

    @property
    def regulation_countries(self) -> tuple[str, ...]:
        return tuple(c for c in self.twilio_regulations_countries.split(",") if c)

    @field_validator("secret_keys")
    @classmethod
    def _check_secret_keys(cls, value: SecretStr) -> SecretStr:
        from cryptography.fernet import Fernet

        for key in (k.strip() for k in value.get_secret_value().split(",") if k.strip()):
            try:
                Fernet(key.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                # Never echo the value: it is a key.
                raise ValueError(
                    "each key must be 32 url-safe base64-encoded bytes "
                    "(`provisioner secrets new-key` makes one)"
                ) from None
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: str) -> str:
        parse_sentinels(value)  # ValueError names the part that is not host:port
        return value

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be the collector's http:// or https:// base URL (OTLP/HTTP)")
        return value

    @field_validator("otel_traces_sampler_arg")
    @classmethod
    def _check_ratio(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("must be a ratio from 0 to 1")
        return value

    @field_validator("provider_bulk_share")
    @classmethod
    def _check_share(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError("must be above 0 and at most 1")
        return value

    @field_validator(
        "setup_cost_phone",
        "setup_cost_email",
        "setup_cost_whatsapp",
        "monthly_cost_phone",
        "monthly_cost_email",
        "monthly_cost_whatsapp",
    )
    @classmethod
    def _non_negative_cents(cls, value: Decimal) -> Decimal:
        if value < 0 or value != value.quantize(Decimal("0.01")):
            raise ValueError("must be a non-negative amount with at most 2 decimal places")
        return value

    @field_validator("console_sign_in_limit")
    @classmethod
    def _check_sign_in_limit(cls, value: str) -> str:
        from limits import parse_many

        parse_many(value)  # ValueError says what it could not read
        return value

    @field_validator("webhook_attempt_retention_days", "retention_chunk", "console_session_s")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("grace_period_days")
    @classmethod
    def _check_grace(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        # frozen model: derived defaults are set through object.__setattr__ once, at construction.
        if self.redis_sentinels.strip() and not self.redis_sentinel_master:
            raise ValueError(
                "PROVISIONER_REDIS_SENTINEL_MASTER must name the master the sentinels watch "
                "when PROVISIONER_REDIS_SENTINELS is set"
            )
        if not self.database_url:
            path = (self.var_dir / "provisioner.db").resolve()
            object.__setattr__(self, "database_url", f"sqlite:///{path}")
        if self.sandbox_url:
            base = self.sandbox_url.rstrip("/")
            for name in (
                "twilio_api_url",
                "twilio_messaging_url",
                "twilio_numbers_url",
                "google_directory_url",
                "microsoft_graph_url",
                "microsoft_login_url",
            ):
                object.__setattr__(self, name, base)
            object.__setattr__(self, "google_token_url", f"{base}/token")
            if not self.twilio_waba_id:
                object.__setattr__(self, "twilio_waba_id", SANDBOX_WABA_ID)
        return self
