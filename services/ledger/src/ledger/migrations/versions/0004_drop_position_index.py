"""Drop events_program_position: the feed reads by (program, xact_id, position) now, and
every index on the event store costs each append.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX events_program_position")


def downgrade() -> None:
    op.execute("CREATE INDEX events_program_position ON events (program_id, position)")
