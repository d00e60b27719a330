"""The tiers `loyalty follow` learns, with the time each took effect, so that a purchase
reported late earns the tier multiplier of its own time, as it gets the campaigns of
its own time.

A row holds from ``effective_from`` (the TierChanged's ``occurred_at``) until the
member's next row. The history starts with each member's tier as the ledger holds it
now, effective from the time it changed: the tiers before it were not kept, and a
purchase dated earlier earns at the ladder's entry tier.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE member_tier_history (
            member_id      uuid        NOT NULL,
            effective_from timestamptz NOT NULL,
            program_id     uuid        NOT NULL,
            tier           text        NOT NULL,
            valid_until    timestamptz,
            event_id       uuid        NOT NULL,
            PRIMARY KEY (member_id, effective_from)
        );
        INSERT INTO member_tier_history
               (member_id, effective_from, program_id, tier, valid_until, event_id)
        SELECT member_id, changed_at, program_id, tier, valid_until, event_id
          FROM member_tiers;
    """)


def downgrade() -> None:
    op.execute("DROP TABLE member_tier_history")
