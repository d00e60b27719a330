"""What the ledger keeps from the rules service's topics: member tiers, bonus campaigns.

`loyalty follow` consumes loyalty.tiers.events.v1 and loyalty.campaigns.events.v1 into
these tables (through the consumer inbox), and earns read them to apply the tier's earn
multiplier and the running bonus campaigns.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
from loyalty_common.consumer import INBOX_DDL

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(INBOX_DDL)
    op.execute("""
        CREATE TABLE member_tiers (
            member_id   uuid PRIMARY KEY,
            program_id  uuid NOT NULL,
            tier        text NOT NULL,
            valid_until timestamptz,
            changed_at  timestamptz NOT NULL,
            event_id    uuid NOT NULL
        );
        CREATE TABLE bonus_campaigns (
            campaign_id  uuid PRIMARY KEY,
            program_id   uuid NOT NULL,
            name         text NOT NULL,
            multiplier   numeric NOT NULL,
            starts_at    timestamptz NOT NULL,
            ends_at      timestamptz NOT NULL,
            channels     text[] NOT NULL DEFAULT '{}',
            categories   text[] NOT NULL DEFAULT '{}',
            store_ids    text[] NOT NULL DEFAULT '{}',
            tiers        text[] NOT NULL DEFAULT '{}',
            cancelled_at timestamptz
        );
        CREATE INDEX bonus_campaigns_running ON bonus_campaigns (program_id, ends_at)
            WHERE cancelled_at IS NULL;
    """)


def downgrade() -> None:
    op.execute("DROP TABLE bonus_campaigns, member_tiers, consumer_inbox, consumer_blocked_keys")
