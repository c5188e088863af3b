"""Provider credentials sealed at rest: keys rotate, a wrong key never opens them."""

from __future__ import annotations

import pytest

from worker.secrets import SecretBox, SecretsUnreadable, new_key
from worker.settings import Settings


def test_a_new_key_first_still_opens_what_the_old_one_sealed():
    old, new = new_key(), new_key()
    sealed = SecretBox([old]).seal({"client_secret": "s3cret"})
    assert SecretBox([new, old]).open(sealed) == {"client_secret": "s3cret"}


def test_rotate_reseals_under_the_newest_key_so_the_old_one_can_go():
    old, new = new_key(), new_key()
    sealed = SecretBox([old]).seal({"client_secret": "s3cret"})
    rotated = SecretBox([new, old]).rotate(sealed)
    assert SecretBox([new]).open(rotated) == {"client_secret": "s3cret"}


def test_a_key_that_did_not_seal_it_cannot_open_it():
    sealed = SecretBox([new_key()]).seal({"client_secret": "s3cret"})
    with pytest.raises(SecretsUnreadable):
        SecretBox([new_key()]).open(sealed)


def test_the_sealed_value_does_not_contain_the_secret():
    assert "s3cret" not in SecretBox([new_key()]).seal({"client_secret": "s3cret"})


def test_without_keys_one_is_made_once_under_var_dir(tmp_path):
    settings = Settings(var_dir=tmp_path)
    sealed = SecretBox.from_settings(settings).seal({"a": 1})
    assert SecretBox.from_settings(settings).open(sealed) == {"a": 1}
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0


def test_a_malformed_key_names_the_variable_not_the_key():
    with pytest.raises(ValueError, match="PROVISIONER_SECRET_KEYS") as caught:
        SecretBox(["not-a-fernet-key"])
    assert "not-a-fernet-key" not in str(caught.value)
