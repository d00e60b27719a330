"""The relay publishes the event store to Kafka: its cursor, and the order it reads in.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE INDEX events_commit_order ON events (xact_id, position);
        CREATE TABLE relay_cursors (
            name          text PRIMARY KEY,
            xact_id       xid8 NOT NULL,
            position      bigint NOT NULL,
            published_at  timestamptz
        );
        INSERT INTO relay_cursors (name, xact_id, position) VALUES ('ledger-events', '0', 0);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE relay_cursors; DROP INDEX events_commit_order;")
