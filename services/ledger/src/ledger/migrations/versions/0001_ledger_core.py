"""Ledger core: programs, API keys, the event store and its projections.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE programs (
    program_id      uuid PRIMARY KEY,
    name            text NOT NULL,
    config          jsonb NOT NULL,
    config_version  integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    program_id  uuid NOT NULL REFERENCES programs,
    name        text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- The event store. One stream per member (stream_id = member id) or program.
-- xact_id lets feed readers wait for transactions that took a lower position but
-- have not committed yet, so that no committed event is ever skipped.
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    program_id      uuid NOT NULL,
    stream_id       text NOT NULL,
    version         integer NOT NULL,
    type            text NOT NULL,
    data            jsonb NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    actor           text NOT NULL,
    reason          text,
    correlation_id  text NOT NULL,
    causation_id    text,
    xact_id         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream_id, version)
);
CREATE INDEX events_program_position ON events (program_id, position);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event store is append-only: % is refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- Projections: rebuildable from the events alone.
CREATE TABLE members (
    member_id             uuid PRIMARY KEY,
    program_id            uuid NOT NULL,
    external_id           text NOT NULL,
    version               integer NOT NULL,
    enrolled_at           timestamptz NOT NULL,
    profile               jsonb NOT NULL,
    available             bigint NOT NULL,
    pending               bigint NOT NULL,
    debt                  bigint NOT NULL,
    lifetime_earned       bigint NOT NULL,
    qualifying            jsonb NOT NULL,
    periods_closed_until  timestamptz,
    next_period_end       timestamptz NOT NULL,
    UNIQUE (program_id, external_id)
);
CREATE INDEX members_next_period_end ON members (next_period_end);

CREATE TABLE lots (
    lot_id        uuid PRIMARY KEY,
    member_id     uuid NOT NULL,
    earned_at     timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    available_at  timestamptz,
    original      bigint NOT NULL,
    remaining     bigint NOT NULL,
    pending       boolean NOT NULL
);
CREATE INDEX lots_member_open ON lots (member_id, expires_at) WHERE remaining > 0 OR pending;
CREATE INDEX lots_due_expiry ON lots (expires_at) WHERE remaining > 0;
CREATE INDEX lots_due_activation ON lots (available_at) WHERE pending;

CREATE TABLE transactions (
    transaction_id       uuid PRIMARY KEY,
    program_id           uuid NOT NULL,
    member_id            uuid NOT NULL,
    kind                 text NOT NULL,
    points               bigint NOT NULL,
    occurred_at          timestamptz NOT NULL,
    qualifying_points    bigint NOT NULL,
    qualifying_month     text,
    lot_id               uuid,
    allocations          jsonb NOT NULL,
    amount               numeric,
    currency             text,
    order_id             text,
    reversed_points      bigint NOT NULL,
    reversed_qualifying  bigint NOT NULL,
    reversed_amount      numeric NOT NULL,
    returned             jsonb NOT NULL
);
CREATE UNIQUE INDEX transactions_one_earn_per_order ON transactions (member_id, order_id)
    WHERE kind = 'earn' AND order_id IS NOT NULL;

CREATE TABLE cards (
    program_id  uuid NOT NULL,
    card_token  text NOT NULL,
    member_id   uuid NOT NULL,
    PRIMARY KEY (program_id, card_token)
);
CREATE INDEX cards_member ON cards (member_id);

CREATE TABLE idempotency_keys (
    program_id    uuid NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status_code   integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, key)
);
"""

DOWNGRADE = """
DROP TABLE idempotency_keys, cards, transactions, lots, members, events, api_keys, programs;
DROP FUNCTION events_are_append_only();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
