"""Members found by email (case-insensitive) and by phone within a program, by index
(`GET /v1/members?email=...`, `?phone=...`). External ids and card tokens have theirs.

A plain CREATE INDEX, not CONCURRENTLY: a concurrent build waits for every open
transaction, and replicas waiting for the migration lock hold one (a deadlock). Writes
to members wait while it builds; see docs/operations.md.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE INDEX members_email ON members (program_id, lower(profile ->> 'email'));
        CREATE INDEX members_phone ON members (program_id, (profile ->> 'phone'));
    """)


def downgrade() -> None:
    op.execute("DROP INDEX members_email, members_phone")
