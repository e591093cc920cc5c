//! The store's schema, by version, in each database's dialect. A database is brought up to
//! `VERSION` one step at a time, each step in its own transaction; one with a newer version than
//! this binary knows is refused. SQLite keeps the version in `PRAGMA user_version`, PostgreSQL in
//! `reagent_schema`.

/// The schema this binary writes.
pub(crate) const VERSION: i64 = 2;

/// `SQLITE_MIGRATIONS[n]` takes a SQLite database from version `n` to `n + 1`.
pub(crate) const SQLITE_MIGRATIONS: [&str; VERSION as usize] = [
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    agent TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    task TEXT NOT NULL,
    inputs TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    checkpoint TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    key_id TEXT,
    idempotency_key TEXT,
    request_digest TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX runs_idempotency ON runs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_key ON runs (key_id, status);
CREATE TABLE events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE replies (
    run_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, turn)
) WITHOUT ROWID;
CREATE TABLE calls (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    effect TEXT NOT NULL,
    result TEXT,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE decisions (
    run_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    result TEXT,
    made_by TEXT NOT NULL,
    made_ms INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX decisions_run ON decisions (run_id, used);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scopes TEXT NOT NULL,
    max_runs INTEGER NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
"#,
    r#"
-- 2: webhooks. A run may name a callback URL; its final state commits a delivery here.
ALTER TABLE runs ADD COLUMN callback_url TEXT;
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    delivered_ms INTEGER,
    gave_up_ms INTEGER,
    last_error TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX webhooks_due ON webhooks (next_ms) WHERE delivered_ms IS NULL AND gave_up_ms IS NULL;
"#,
];

/// `POSTGRES_MIGRATIONS[n]` takes a PostgreSQL database from version `n` to `n + 1`: the same
/// tables as SQLite's, with Postgres's types. Times are milliseconds since the epoch by the
/// database's clock, so that leases mean the same on every machine.
pub(crate) const POSTGRES_MIGRATIONS: [&str; VERSION as usize] = [
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    agent TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    task TEXT NOT NULL,
    inputs TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    checkpoint TEXT,
    last_seq BIGINT NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    key_id TEXT,
    idempotency_key TEXT,
    request_digest TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX runs_idempotency ON runs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_key ON runs (key_id, status);
-- The queue: the runs a worker may claim, by tenant and age, and the live claims it counts.
CREATE INDEX runs_claimable ON runs (tenant, id) WHERE status IN ('queued', 'running');
CREATE INDEX runs_claimed ON runs (tenant) WHERE owner IS NOT NULL;
CREATE TABLE events (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE replies (
    run_id TEXT NOT NULL,
    turn BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, turn)
);
CREATE TABLE calls (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    effect TEXT NOT NULL,
    result TEXT,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE decisions (
    run_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    result TEXT,
    made_by TEXT NOT NULL,
    made_ms BIGINT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX decisions_run ON decisions (run_id, used);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scopes TEXT NOT NULL,
    max_runs BIGINT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);
"#,
    r#"
-- 2: webhooks. A run may name a callback URL; its final state commits a delivery here.
ALTER TABLE runs ADD COLUMN callback_url TEXT;
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_ms BIGINT NOT NULL,
    delivered_ms BIGINT,
    gave_up_ms BIGINT,
    last_error TEXT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX webhooks_due ON webhooks (next_ms) WHERE delivered_ms IS NULL AND gave_up_ms IS NULL;
"#,
];
