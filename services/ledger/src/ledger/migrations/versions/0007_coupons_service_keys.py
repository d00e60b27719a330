"""Coupons held by members; service keys that act for any program.

A service key (api_keys.program_id NULL) names the program of each request in the
X-Loyalty-Program header; see docs/adr/0009-service-keys.md.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        ALTER TABLE api_keys ALTER COLUMN program_id DROP NOT NULL;
        CREATE TABLE coupons (
            coupon_id      uuid PRIMARY KEY,
            program_id     uuid NOT NULL,
            member_id      uuid NOT NULL,
            code           text NOT NULL,
            kind           text NOT NULL,
            value          numeric NOT NULL,
            currency       text,
            points_cost    bigint NOT NULL,
            valid_from     timestamptz NOT NULL,
            valid_until    timestamptz NOT NULL,
            issued_at      timestamptz NOT NULL,
            campaign_id    uuid,
            redeemed_at    timestamptz,
            order_id       text,
            order_amount   numeric,
            order_currency text,
            transaction_id uuid,
            CONSTRAINT coupons_code_unique UNIQUE (program_id, code)
        );
        CREATE INDEX coupons_member ON coupons (member_id);
    """)


def downgrade() -> None:
    op.execute("""
        DROP TABLE coupons;
        DELETE FROM api_keys WHERE program_id IS NULL;
        ALTER TABLE api_keys ALTER COLUMN program_id SET NOT NULL;
    """)
