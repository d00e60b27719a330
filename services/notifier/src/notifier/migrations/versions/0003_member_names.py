"""Members' first and last names (from the ledger's MemberEnrolled and
MemberProfileChanged), so that messages greet members by their first name.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE members ADD COLUMN first_name text, ADD COLUMN last_name text")


def downgrade() -> None:
    op.execute("ALTER TABLE members DROP COLUMN first_name, DROP COLUMN last_name")
