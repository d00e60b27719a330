"""The rules service's own state: what it learned from the ledger topic, tiers,
campaigns, triggers, punch cards, commands for the ledger, inbox and outbox.

Revision ID: 0001
Revises:
"""

from alembic import op
from loyalty_common.consumer import INBOX_DDL
from loyalty_common.outbox import OUTBOX_DDL

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(INBOX_DDL)
    op.execute(OUTBOX_DDL)
    op.execute("""
        -- The ledger's program document (ProgramConfigured) and the rules' own settings.
        CREATE TABLE programs (
            program_id   uuid PRIMARY KEY,
            config       jsonb,
            triggers     jsonb NOT NULL DEFAULT '{}',
            updated_at   timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE members (
            member_id          uuid PRIMARY KEY,
            program_id         uuid NOT NULL,
            enrolled_at        timestamptz NOT NULL,
            birthday           date,
            time_zone          text,
            referred_by        uuid,
            referral_rewarded  boolean NOT NULL DEFAULT false,
            last_activity_at   timestamptz NOT NULL,
            -- The tier engine's state (rules.domain.tiers.MemberTiers), and what it
            -- last announced, for segments and the API.
            tier_state         jsonb NOT NULL,
            tier               text,
            -- When the clock must look at this member again (grace expiry, warning).
            tier_check_at      timestamptz,
            -- Facts that arrived before the program's configuration, with their causes:
            -- applied in order once it arrives, as if it had been there.
            tier_deferred      jsonb NOT NULL DEFAULT '[]'
        );
        CREATE INDEX members_program_tier ON members (program_id, tier);
        CREATE INDEX members_tier_check ON members (tier_check_at) WHERE tier_check_at IS NOT NULL;
        CREATE INDEX members_birthday ON members (program_id, extract(month FROM birthday))
            WHERE birthday IS NOT NULL;

        CREATE TABLE tier_history (
            event_id     uuid PRIMARY KEY,
            member_id    uuid NOT NULL,
            program_id   uuid NOT NULL,
            occurred_at  timestamptz NOT NULL,
            from_tier    text,
            to_tier      text NOT NULL,
            reason       text NOT NULL,
            valid_until  timestamptz,
            seq          bigserial
        );
        CREATE INDEX tier_history_member ON tier_history (member_id, seq);

        -- Purchases, for "top N by spend" segments.
        CREATE TABLE purchases (
            transaction_id   uuid PRIMARY KEY,
            program_id       uuid NOT NULL,
            member_id        uuid NOT NULL,
            occurred_at      timestamptz NOT NULL,
            amount           numeric NOT NULL,
            currency         text NOT NULL,
            points           bigint NOT NULL,
            reversed_amount  numeric NOT NULL DEFAULT 0,
            reversed_points  bigint NOT NULL DEFAULT 0
        );
        CREATE INDEX purchases_program_time ON purchases (program_id, occurred_at);

        -- Point lots as far as expiry warnings need them.
        CREATE TABLE lots (
            lot_id      uuid PRIMARY KEY,
            member_id   uuid NOT NULL,
            program_id  uuid NOT NULL,
            expires_at  timestamptz NOT NULL,
            remaining   bigint NOT NULL,
            warned      boolean NOT NULL DEFAULT false
        );
        CREATE INDEX lots_to_warn ON lots (expires_at) WHERE remaining > 0 AND NOT warned;

        CREATE TABLE campaigns (
            campaign_id   uuid PRIMARY KEY,
            program_id    uuid NOT NULL,
            kind          text NOT NULL CHECK (kind IN ('bonus', 'offer')),
            name          text NOT NULL,
            definition    jsonb NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            cancelled_at  timestamptz,
            targeted      integer NOT NULL DEFAULT 0
        );
        CREATE INDEX campaigns_program ON campaigns (program_id, created_at);

        -- Coupons of offer campaigns, as the ledger reports them issued and used.
        CREATE TABLE campaign_coupons (
            coupon_id     uuid PRIMARY KEY,
            campaign_id   uuid NOT NULL,
            program_id    uuid NOT NULL,
            member_id     uuid NOT NULL,
            code          text NOT NULL,
            issued_at     timestamptz NOT NULL,
            redeemed_at   timestamptz,
            order_amount  numeric,
            currency      text
        );
        CREATE INDEX campaign_coupons_campaign ON campaign_coupons (campaign_id);

        CREATE TABLE punch_cards (
            card_id     uuid PRIMARY KEY,
            program_id  uuid NOT NULL,
            name        text NOT NULL,
            category    text NOT NULL,
            size        integer NOT NULL CHECK (size > 0),
            reward      jsonb NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            retired_at  timestamptz
        );
        CREATE INDEX punch_cards_program ON punch_cards (program_id, category)
            WHERE retired_at IS NULL;

        CREATE TABLE punch_progress (
            card_id    uuid NOT NULL,
            member_id  uuid NOT NULL,
            punches    integer NOT NULL DEFAULT 0,
            completed  integer NOT NULL DEFAULT 0,
            PRIMARY KEY (card_id, member_id)
        );

        -- Punches per purchase, so that a reversal can take them back.
        CREATE TABLE punch_entries (
            card_id         uuid NOT NULL,
            transaction_id  uuid NOT NULL,
            member_id       uuid NOT NULL,
            quantity        integer NOT NULL,
            -- Its punches left on the card that was open after it (the rest completed
            -- cards), and that card's number (completed cards before it).
            on_open         integer NOT NULL,
            open_card       integer NOT NULL,
            -- Of its quantity, how much reversals have dealt with, and how many
            -- punches they actually took back from the open card.
            withdrawn       integer NOT NULL DEFAULT 0,
            taken           integer NOT NULL DEFAULT 0,
            PRIMARY KEY (card_id, transaction_id)
        );

        -- Rewards to write to the ledger. The command id is the Idempotency-Key and is
        -- derived from the triggering event, so redelivery and replay never reward twice.
        CREATE TABLE ledger_commands (
            command_id       text PRIMARY KEY,
            program_id       uuid NOT NULL,
            member_id        uuid NOT NULL,
            kind             text NOT NULL CHECK (kind IN ('earn_bonus', 'issue_coupon')),
            body             jsonb NOT NULL,
            causation_id     text,
            correlation_id   text,
            -- What to announce once the ledger has it: trigger and campaign details.
            announce         jsonb NOT NULL,
            replay           boolean NOT NULL DEFAULT false,
            status           text NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'done', 'failed')),
            attempts         integer NOT NULL DEFAULT 0,
            next_attempt_at  timestamptz NOT NULL DEFAULT now(),
            response         jsonb,
            error            text,
            created_at       timestamptz NOT NULL DEFAULT now(),
            done_at          timestamptz
        );
        CREATE INDEX ledger_commands_due ON ledger_commands (next_attempt_at)
            WHERE status = 'pending';
        CREATE INDEX ledger_commands_member ON ledger_commands (member_id);
    """)


def downgrade() -> None:
    op.execute("""
        DROP TABLE ledger_commands, punch_entries, punch_progress, punch_cards,
            campaign_coupons, campaigns, lots, purchases, tier_history, members, programs;
    """)
