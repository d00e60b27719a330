"""The global feed pages by (transaction id, position): index that order per program.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX events_program_feed ON events (program_id, xact_id, position)")


def downgrade() -> None:
    op.execute("DROP INDEX events_program_feed")
