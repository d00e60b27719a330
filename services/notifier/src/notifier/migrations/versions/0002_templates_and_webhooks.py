"""Programs' own templates (PUT /v1/templates/...); the webhook channel's signing
secret, kept apart from the settings document so that reading the settings never shows
it; and each message's trace (the W3C traceparent of the event it was decided from), so
that sending it continues the trace (and of each event waiting for its member).

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
        ALTER TABLE messages ADD COLUMN trace_context text;
        ALTER TABLE waiting_events ADD COLUMN trace_context text;
    """)


def downgrade() -> None:
    op.execute(
        "DROP TABLE template_overrides; ALTER TABLE programs DROP COLUMN webhook_secret;"
        " ALTER TABLE messages DROP COLUMN trace_context;"
        " ALTER TABLE waiting_events DROP COLUMN trace_context"
    )
