"""Production mode's rules (worker/production.py): which settings a deployment refuses to start
on, and that development keeps its embedded defaults."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from worker.embedded_redis import redis_url
from worker.production import refusal_line, refusals
from worker.secrets import SecretBox
from worker.settings import Settings

KEY = Fernet.generate_key().decode()
SID = "AC" + "1f" * 16


def production(tmp_path, **overrides) -> Settings:
    """Settings a production deployment may start on, but for `overrides`."""
    values = {
        "env": "production",
        "var_dir": tmp_path / "var",
        "database_url": "postgresql://provisioner@db.internal:5432/provisioner",
        "redis_url": "rediss://redis.internal:6380/0",
        "secret_keys": KEY,
        "twilio_account_sid": SID,
        "twilio_auth_token": "twilio-token",
        "google_access_token": "google-token",
    }
    values.update(overrides)
    return Settings(**values)


def variables(settings: Settings) -> list[str]:
    return [r.variable for r in refusals(settings)]


def test_a_complete_production_configuration_starts(tmp_path):
    assert refusals(production(tmp_path)) == []


def test_redis_behind_sentinel_needs_no_url(tmp_path):
    settings = production(tmp_path, redis_url="", redis_sentinels="10.0.0.1:26379,10.0.0.2:26379",
                          redis_sentinel_master="provisioner")
    assert refusals(settings) == []


def test_development_starts_on_the_embedded_defaults(tmp_path):
    settings = Settings(env="development", var_dir=tmp_path, database_url="", redis_url="",
                        secret_keys="", twilio_auth_token="", google_access_token="",
                        sandbox_url="http://127.0.0.1:8900", console_token="short")
    assert settings.database_url.startswith("sqlite:///")
    assert refusals(settings) == []


@pytest.mark.parametrize(("overrides", "variable"), [
    ({"database_url": ""}, "PROVISIONER_DATABASE_URL"),
    ({"database_url": "sqlite:////var/lib/provisioner/provisioner.db"},
     "PROVISIONER_DATABASE_URL"),
    ({"redis_url": ""}, "PROVISIONER_REDIS_URL"),
    ({"secret_keys": ""}, "PROVISIONER_SECRET_KEYS"),
    ({"secret_keys": " , "}, "PROVISIONER_SECRET_KEYS"),
    ({"sandbox_url": "http://sandbox:8900"}, "PROVISIONER_SANDBOX_URL"),
    ({"twilio_api_url": "http://api.twilio.com"}, "PROVISIONER_TWILIO_API_URL"),
    ({"twilio_messaging_url": "https://127.0.0.1:8900"}, "PROVISIONER_TWILIO_MESSAGING_URL"),
    ({"google_directory_url": "https://localhost"}, "PROVISIONER_GOOGLE_DIRECTORY_URL"),
    ({"google_token_url": "http://sandbox:8900/token"}, "PROVISIONER_GOOGLE_TOKEN_URL"),
    ({"microsoft_graph_url": "http://graph"}, "PROVISIONER_MICROSOFT_GRAPH_URL"),
    ({"microsoft_login_url": "ftp://login"}, "PROVISIONER_MICROSOFT_LOGIN_URL"),
    ({"twilio_auth_token": ""}, "PROVISIONER_TWILIO_AUTH_TOKEN"),
    ({"twilio_account_sid": ""}, "PROVISIONER_TWILIO_ACCOUNT_SID"),
    ({"twilio_account_sid": "AC00000000000000000000000000000000"},
     "PROVISIONER_TWILIO_ACCOUNT_SID"),
    ({"google_access_token": ""}, "PROVISIONER_GOOGLE_ACCESS_TOKEN"),
    ({"google_access_token": "", "google_service_account_json": '{"type": "service_account"}'},
     "PROVISIONER_GOOGLE_ADMIN_SUBJECT"),
    ({"console_token": "x" * 31}, "PROVISIONER_CONSOLE_TOKEN"),
])
def test_each_development_default_is_refused_naming_its_variable(tmp_path, overrides, variable):
    assert variables(production(tmp_path, **overrides)) == [variable]


def test_the_sandbox_url_is_named_once_not_as_every_provider_url_it_replaced(tmp_path):
    settings = production(tmp_path, sandbox_url="http://sandbox:8900")
    assert settings.twilio_api_url == "http://sandbox:8900"
    assert variables(settings) == ["PROVISIONER_SANDBOX_URL"]


def test_a_google_service_account_with_its_admin_replaces_the_static_token(tmp_path):
    settings = production(tmp_path, google_access_token="", google_admin_subject="admin@a.com",
                          google_service_account_json='{"type": "service_account"}')
    assert refusals(settings) == []


def test_a_console_token_of_32_characters_or_none_at_all_is_taken(tmp_path):
    assert refusals(production(tmp_path, console_token="x" * 32)) == []
    assert refusals(production(tmp_path, console_token="")) == []


def test_every_refusal_goes_on_one_line_naming_each_variable(tmp_path):
    settings = Settings(env="production", var_dir=tmp_path, database_url="", redis_url="",
                        secret_keys="", twilio_auth_token="", google_access_token="",
                        console_token="tok-9f8e7d")
    line = refusal_line(refusals(settings))
    assert "\n" not in line
    for variable in ("PROVISIONER_DATABASE_URL", "PROVISIONER_REDIS_URL",
                     "PROVISIONER_SECRET_KEYS", "PROVISIONER_TWILIO_ACCOUNT_SID",
                     "PROVISIONER_TWILIO_AUTH_TOKEN", "PROVISIONER_GOOGLE_ACCESS_TOKEN",
                     "PROVISIONER_CONSOLE_TOKEN"):
        assert variable in line
    assert "tok-9f8e7d" not in line  # a value is never echoed, only its variable


def test_production_makes_no_secret_key_of_its_own(tmp_path):
    settings = production(tmp_path, secret_keys="")
    with pytest.raises(ValueError, match="PROVISIONER_SECRET_KEYS"):
        SecretBox.from_settings(settings)
    assert not (tmp_path / "var").exists()
    # Development makes one under the var dir, as the dev stack relies on.
    SecretBox.from_settings(production(tmp_path, env="development", secret_keys=""))
    assert (tmp_path / "var" / "secret.key").exists()


def test_production_starts_no_embedded_redis(tmp_path):
    with pytest.raises(RuntimeError, match="PROVISIONER_REDIS_URL"):
        redis_url(production(tmp_path, redis_url=""))
    assert not (tmp_path / "var").exists()
