"""How far each program's clock has run, so that birthdays the clock skipped over
(an outage, a deploy) are still rewarded on its next run.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        -- The latest as_of a clock run has reached, per program. A table of its own, not
        -- a column of programs: the clock updates it at the end of its transaction, after
        -- locking members, and must not wait on (or deadlock with) a program's row that
        -- the consumer locks before its members.
        CREATE TABLE clock_marks (
            program_id  uuid PRIMARY KEY,
            as_of       timestamptz NOT NULL
        );
    """)


def downgrade() -> None:
    op.execute("DROP TABLE clock_marks;")
