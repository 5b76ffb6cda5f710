-- PostgreSQL form of the same schema step as ../sqlite/ (DOUBLE PRECISION times, BYTEA content,
-- identity keys, "C" collation where the API promises lexical order).
-- Push webhooks: targets, the push-event outbox written in the manifest transaction, and
-- deliveries (one per webhook per coalesced push), which the dispatcher claims and retries.

CREATE TABLE webhook (
    id                TEXT PRIMARY KEY,
    repository        TEXT NOT NULL REFERENCES repository (name) ON DELETE CASCADE,
    url               TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    secret_ciphertext TEXT,
    managed           INTEGER NOT NULL DEFAULT 0,
    created_at        DOUBLE PRECISION NOT NULL
);
CREATE INDEX webhook_repository ON webhook (repository);

-- One row per manifest write; coalesced into push events by repository and principal.
CREATE TABLE push_outbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository       TEXT NOT NULL,
    principal        TEXT NOT NULL,
    manifest_digest  TEXT NOT NULL,
    tag              TEXT,
    image_id         TEXT NOT NULL,
    visibility       TEXT NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL
);
CREATE INDEX push_outbox_created ON push_outbox (created_at);

CREATE TABLE delivery (
    id              TEXT PRIMARY KEY,
    webhook         TEXT NOT NULL REFERENCES webhook (id) ON DELETE CASCADE,
    repository      TEXT NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    claimed_until   DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    finished_at     DOUBLE PRECISION
);
CREATE INDEX delivery_due ON delivery (state, next_attempt_at);
CREATE INDEX delivery_webhook ON delivery (webhook, created_at);
