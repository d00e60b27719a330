"""`notifier`: the notifier's command line (migrations, serve)."""

from __future__ import annotations

from pathlib import Path

import typer
import uvicorn
from loyalty_common.embedded import resolve_database_url
from loyalty_common.migrations import upgrade

from notifier.config import NotifierSettings

app = typer.Typer(help="The loyalty notifier.", no_args_is_help=True)
db_app = typer.Typer(help="The notifier's database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def database_url(settings: NotifierSettings) -> str:
    """NOTIFIER_DATABASE_URL, else the `loyalty_notifier` database of the embedded server."""
    return resolve_database_url(settings.database_url, settings.data_dir, "loyalty_notifier")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations."""
    upgrade(MIGRATIONS, database_url(NotifierSettings()))
    typer.echo("notifier database is at the latest migration", err=True)


@app.command()
def serve() -> None:
    """Run the API (NOTIFIER_HOST:NOTIFIER_PORT), the consumer, the delivery worker and
    the outbox relay, until SIGTERM or Ctrl-C."""
    from notifier.entrypoints.api import create_app

    settings = NotifierSettings()
    dsn = database_url(settings)
    upgrade(MIGRATIONS, dsn)
    uvicorn.run(
        create_app(settings, dsn),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
