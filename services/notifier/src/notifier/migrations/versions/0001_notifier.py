"""The notifier's tables: what it knows of programs and members (from the ledger topic),
the messages it decided on, and its inbox and outbox.

Revision ID: 0001
Revises:
"""

from alembic import op
from loyalty_common.consumer import INBOX_DDL
from loyalty_common.outbox import OUTBOX_DDL

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(INBOX_DDL)
    op.execute(OUTBOX_DDL)
    op.execute("""
        CREATE TABLE programs (
            program_id      uuid PRIMARY KEY,
            name            text NOT NULL,
            default_locale  text NOT NULL,
            time_zone       text NOT NULL,
            -- The notifier's own per-program settings (PUT /v1/settings).
            settings        jsonb NOT NULL DEFAULT '{}'
        );

        CREATE TABLE members (
            member_id   uuid PRIMARY KEY,
            program_id  uuid NOT NULL,
            email       text,
            phone       text,
            locale      text,
            time_zone   text,
            consents    jsonb NOT NULL DEFAULT '{}'
        );

        -- Tier and campaign events for members whose enrolment (on the ledger topic)
        -- has not been applied yet; applied in arrival order when it is.
        CREATE TABLE waiting_events (
            seq         bigserial PRIMARY KEY,
            member_id   uuid NOT NULL,
            topic       text NOT NULL,
            value       bytea NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX waiting_events_member ON waiting_events (member_id, seq);

        -- One row per (event, channel): the primary key is what makes a message happen
        -- at most once through redelivery, rebalance and replay.
        CREATE TABLE messages (
            message_id       uuid PRIMARY KEY,
            event_id         uuid NOT NULL,
            channel          text NOT NULL,
            program_id       uuid NOT NULL,
            member_id        uuid NOT NULL,
            event_type       text NOT NULL,
            kind             text NOT NULL,       -- marketing | transactional
            campaign_id      uuid,
            status           text NOT NULL,       -- pending | sent | suppressed | failed
            reason           text,
            recipient        text,
            locale           text,
            subject          text,
            body_text        text,
            body_html        text,
            segments         int,
            unsubscribe_token text UNIQUE,
            correlation_id   text NOT NULL DEFAULT '',
            attempts         int NOT NULL DEFAULT 0,
            next_attempt_at  timestamptz NOT NULL DEFAULT now(),
            provider_id      text,
            created_at       timestamptz NOT NULL DEFAULT now(),
            sent_at          timestamptz,
            UNIQUE (event_id, channel)
        );
        CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'pending';
        CREATE INDEX messages_member ON messages (member_id, created_at);
        CREATE INDEX messages_campaign ON messages (campaign_id) WHERE campaign_id IS NOT NULL;
    """)


def downgrade() -> None:
    op.execute(
        "DROP TABLE messages, members, programs, outbox, outbox_cursors,"
        " consumer_inbox, consumer_blocked_keys"
    )
