"""Programs' own templates (PUT /v1/templates/...) and the webhook channel's signing
secret, kept apart from the settings document so that reading the settings never shows
it.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        -- A program's replacement for some parts (subject, html, text) of the default
        -- template of one event type, channel and locale; validated when saved.
        CREATE TABLE template_overrides (
            program_id  uuid NOT NULL,
            event_type  text NOT NULL,
            channel     text NOT NULL,
            locale      text NOT NULL,
            parts       jsonb NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (program_id, event_type, channel, locale)
        );

        ALTER TABLE programs ADD COLUMN webhook_secret text;
    """)


def downgrade() -> None:
    op.execute("DROP TABLE template_overrides; ALTER TABLE programs DROP COLUMN webhook_secret")
