"""`provisioner secrets`: the keys that encrypt provider connection credentials at rest."""

from __future__ import annotations

import typer
from sqlalchemy import select

from worker.cli.common import JsonFlag, database, emit, load_settings

app = typer.Typer(no_args_is_help=True, help="Keys of the provider credentials kept at rest.")


@app.command("new-key")
def new_key_command(as_json: JsonFlag = False) -> None:
    """Print a new key for PROVISIONER_SECRET_KEYS (put it first; keep the old ones until
    `provisioner secrets rotate` has run)."""
    from worker.secrets import new_key

    key = new_key()
    emit({"key": key}, as_json, key)


@app.command("rotate")
def rotate(as_json: JsonFlag = False) -> None:
    """Seal every connection's credentials again under the newest key; afterwards the older
    keys may be removed from PROVISIONER_SECRET_KEYS."""
    from worker.secrets import SecretBox
    from worker.store.models import ProviderConnection

    settings = load_settings()
    box = SecretBox.from_settings(settings)
    db = database(settings)
    count = 0
    with db.write() as session:
        for row in session.execute(select(ProviderConnection)).scalars():
            row.secrets_sealed = box.rotate(row.secrets_sealed)
            count += 1
    emit({"resealed": count}, as_json, f"resealed {count} connection(s) under the newest key")
