"""Each event keeps the W3C traceparent of the request that wrote it, which the relay
puts on its Kafka message, so traces run on through the consumers.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE events ADD COLUMN trace_context text")


def downgrade() -> None:
    op.execute("ALTER TABLE events DROP COLUMN trace_context")
