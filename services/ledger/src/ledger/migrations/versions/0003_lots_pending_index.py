"""Pending lots of a member by index, for the lot loads of balances and commands.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX lots_member_pending ON lots (member_id) WHERE pending")


def downgrade() -> None:
    op.execute("DROP INDEX lots_member_pending")
