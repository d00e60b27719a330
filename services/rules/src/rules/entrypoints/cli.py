"""`rules`: the rules service's command line (migrations, serve)."""

from __future__ import annotations

from pathlib import Path

import typer
import uvicorn
from loyalty_common.embedded import resolve_database_url
from loyalty_common.migrations import upgrade

from rules.config import RulesSettings

app = typer.Typer(help="The loyalty rules service.", no_args_is_help=True)
db_app = typer.Typer(help="The rules database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def database_url(settings: RulesSettings) -> str:
    """RULES_DATABASE_URL, else the `loyalty_rules` database of the embedded server."""
    return resolve_database_url(settings.database_url, settings.data_dir, "loyalty_rules")


def migrate(dsn: str) -> None:
    upgrade(MIGRATIONS, dsn)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations."""
    migrate(database_url(RulesSettings()))
    typer.echo("rules database is at the latest migration", err=True)


@app.command()
def serve() -> None:
    """Run the API (RULES_HOST:RULES_PORT), the ledger-topic consumer, the outbox relay,
    the reward worker and the clock, until SIGTERM or Ctrl-C."""
    from rules.entrypoints.api import create_app

    settings = RulesSettings()
    dsn = database_url(settings)
    migrate(dsn)
    uvicorn.run(
        create_app(settings, dsn),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
