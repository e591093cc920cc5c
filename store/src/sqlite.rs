//! The SQLite adapter: one file, WAL journal, a pool of connections. Writes take the database's
//! write lock at `BEGIN IMMEDIATE`, so two writers never deadlock on an upgrade. Commits are
//! durable against a crashed process as soon as they return (`synchronous = NORMAL` in WAL); a
//! commit with `sync` (the record before a side-effect call) is also durable against a crashed
//! machine.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::oneshot;

use crate::group_commit::{self, Write};
use crate::keys::{new_secret, scopes_text};
use crate::rows::{
    KEY_COLUMNS, RUN_COLUMNS, WEBHOOK_COLUMNS, calls_from, decisions_from, events_from, json, key_from, run_from,
    status_counts, webhooks_from,
};
use crate::schema::{SQLITE_MIGRATIONS, VERSION};
use crate::{
    ApiKey, CallEntry, Commit, Created, Decision, NewKey, NewRun, Queue, Run, RunFilter, RunStore, Status, StoreError,
    StoredEvent, Webhook, hash_secret, now_ms,
};

/// The run `claim_next` takes (?1 now, ?2 the per-tenant limit, ?3 the agents as a JSON list): of
/// the claimable runs, those of the tenant with the fewest live claims first, then the oldest.
const NEXT_RUN: &str = "WITH claimed AS (SELECT tenant, COUNT(*) AS n FROM runs \
     WHERE owner IS NOT NULL AND lease_until >= ?1 AND status IN ('queued', 'running', 'paused', 'in_doubt') \
     GROUP BY tenant) \
     SELECT r.id FROM runs r LEFT JOIN claimed ON claimed.tenant = r.tenant \
     WHERE (r.status IN ('queued', 'running') OR (r.cancel_requested AND r.status IN ('paused', 'in_doubt'))) \
     AND (r.owner IS NULL OR r.lease_until < ?1) AND COALESCE(claimed.n, 0) < ?2 \
     AND (?3 = '[]' OR r.agent IN (SELECT value FROM json_each(?3))) \
     ORDER BY COALESCE(claimed.n, 0), r.id LIMIT 1";

pub struct SqliteStore {
    /// Readers.
    pool: SqlitePool,
    /// The one connection this process writes through: writers queue here, in order, instead of
    /// contending for SQLite's write lock (whose busy handler sleeps for milliseconds).
    writer: SqlitePool,
    /// Runs' creations, claims and journal writes, applied in groups by one task (`group_commit`).
    writes: tokio::sync::mpsc::UnboundedSender<Write>,
    place: String,
}

impl SqliteStore {
    /// Opens (creating it if needed) the store at `location`: a file path, or a `sqlite:` URL.
    pub async fn open(location: &str) -> Result<Self, StoreError> {
        let place = location.to_string();
        let failed = |e: sqlx::Error| StoreError::Database { place: place.clone(), message: e.to_string() };
        let options = if location.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(location).map_err(failed)?
        } else {
            if let Some(parent) = Path::new(location).parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Database {
                    place: place.clone(),
                    message: format!("cannot create its folder: {e}"),
                })?;
            }
            SqliteConnectOptions::new().filename(location)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        // Switching a new file to WAL takes a lock that SQLite's busy timeout does not wait for:
        // processes opening a new store at once retry for a while instead of failing.
        // A connection to a local file has nothing to test before each use: sqlx's ping would
        // cost a round trip to its worker thread on every acquire.
        let pool = |size| SqlitePoolOptions::new().max_connections(size).test_before_acquire(false);
        let mut attempts = 0;
        loop {
            let opened = match pool(1).connect_with(options.clone()).await {
                Ok(writer) => match pool(4).connect_with(options.clone()).await {
                    Ok(pool) => {
                        let writes = group_commit::start(writer.clone(), place.clone());
                        let store = SqliteStore { pool, writer, writes, place: place.clone() };
                        store.migrate().await.map(|()| store)
                    }
                    Err(e) => Err(failed(e)),
                },
                Err(e) => Err(failed(e)),
            };
            match opened {
                Err(StoreError::Database { message, .. })
                    if message.contains("database is locked") && attempts < 200 =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                other => return other,
            }
        }
    }

    /// Hands `write` to the writer task and waits for its answer.
    async fn write<T>(&self, write: Write, answer: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
        let stopped =
            || StoreError::Database { place: self.place.clone(), message: "the store's writer stopped".into() };
        self.writes.send(write).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    fn error(&self, e: sqlx::Error) -> StoreError {
        StoreError::Database { place: self.place.clone(), message: e.to_string() }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        loop {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.error(e))?;
            let found: i64 =
                sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await.map_err(|e| self.error(e))?;
            if found > VERSION {
                return Err(StoreError::NewerSchema { place: self.place.clone(), found, known: VERSION });
            }
            if found == VERSION {
                return Ok(());
            }
            let step = usize::try_from(found).unwrap_or(0);
            sqlx::raw_sql(sqlx::AssertSqlSafe(SQLITE_MIGRATIONS[step]))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            let bump = format!("PRAGMA user_version = {}", found + 1);
            sqlx::raw_sql(sqlx::AssertSqlSafe(bump)).execute(&mut *tx).await.map_err(|e| self.error(e))?;
            tx.commit().await.map_err(|e| self.error(e))?;
        }
    }
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create(&self, run: NewRun) -> Result<Created, StoreError> {
        let (done, answer) = oneshot::channel();
        self.write(Write::Create { run, done }, answer).await
    }

    async fn get(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        run_by_id(&mut conn, id).await.map_err(|e| self.error(e))?
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR agent = ?3) AND (?4 IS NULL OR id < ?4) ORDER BY id DESC LIMIT ?5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.tenant.as_deref())
            .bind(filter.status.map(Status::as_str))
            .bind(filter.agent.as_deref())
            .bind(filter.before.as_deref())
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter().map(run_from).collect()
    }

    async fn events(&self, id: &str, after: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query_as("SELECT seq, body FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?")
            .bind(id)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        events_from(rows)
    }

    async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Option<Run>, StoreError> {
        let (done, answer) = oneshot::channel();
        self.write(Write::Claim { id: id.to_string(), owner: owner.to_string(), lease, done }, answer).await
    }

    async fn claim_next(&self, owner: &str, lease: Duration, queue: &Queue) -> Result<Option<Run>, StoreError> {
        let agents = serde_json::to_string(&queue.agents).unwrap_or_else(|_| "[]".into());
        let limit = queue.per_tenant.map_or(i64::MAX, i64::from);
        let next = |now: i64| sqlx::query_scalar::<_, String>(NEXT_RUN).bind(now).bind(limit).bind(agents.clone());
        // Looked for on a reader first: an idle worker's polls take no write lock.
        if next(now_ms()).fetch_optional(&self.pool).await.map_err(|e| self.error(e))?.is_none() {
            return Ok(None);
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.error(e))?;
        let now = now_ms();
        let Some(id) = next(now).fetch_optional(&mut *tx).await.map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        let sql = format!("UPDATE runs SET owner = ?, lease_until = ? WHERE id = ? RETURNING {RUN_COLUMNS}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(now.saturating_add(millis(lease)))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        run_from(&row).map(Some)
    }

    async fn renew(&self, id: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query("UPDATE runs SET lease_until = ? WHERE id = ? AND owner = ? AND lease_until >= ?")
            .bind(now.saturating_add(millis(lease)))
            .bind(id)
            .bind(owner)
            .bind(now)
            .execute(&self.writer)
            .await
            .map_err(|e| self.error(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET owner = NULL, lease_until = 0 WHERE id = ? AND owner = ?")
            .bind(id)
            .bind(owner)
            .execute(&self.writer)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn commit(&self, id: &str, owner: &str, commit: Commit) -> Result<u64, StoreError> {
        let (done, answer) = oneshot::channel();
        self.write(Write::Commit { run: id.to_string(), owner: owner.to_string(), commit, done }, answer).await
    }

    async fn reply(&self, id: &str, turn: u32) -> Result<Option<Value>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM replies WHERE run_id = ? AND turn = ?")
            .bind(id)
            .bind(i64::from(turn))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        body.map(|b| json(&b, "a model reply")).transpose()
    }

    async fn calls(&self, id: &str) -> Result<Vec<CallEntry>, StoreError> {
        let sql = "SELECT key, tool, arguments, effect, result FROM calls WHERE run_id = ? ORDER BY started_ms, key";
        let rows = sqlx::query_as(sql).bind(id).fetch_all(&self.pool).await.map_err(|e| self.error(e))?;
        calls_from(rows)
    }

    async fn cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        let asked: Option<i64> = sqlx::query_scalar("SELECT cancel_requested FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(asked.unwrap_or(0) != 0)
    }

    async fn request_cancel(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.error(e))?;
        sqlx::query("UPDATE runs SET cancel_requested = 1, updated_ms = ? WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        let run = run_by_id(&mut tx, id).await.map_err(|e| self.error(e))??;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(run)
    }

    async fn orphaned(&self) -> Result<Vec<String>, StoreError> {
        let held: Vec<(String, String)> =
            sqlx::query_as("SELECT id, owner FROM runs WHERE owner IS NOT NULL AND lease_until >= ? ORDER BY id")
                .bind(now_ms())
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.error(e))?;
        Ok(held.into_iter().filter(|(_, owner)| owner_is_gone(owner)).map(|(id, _)| id).collect())
    }

    async fn decide(&self, id: &str, decisions: &[Decision]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.error(e))?;
        for decision in decisions {
            sqlx::query("DELETE FROM decisions WHERE run_id = ? AND call_id = ? AND used = 0")
                .bind(id)
                .bind(&decision.call_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            sqlx::query(
                "INSERT INTO decisions (run_id, call_id, verdict, result, made_by, made_ms) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(&decision.call_id)
            .bind(&decision.verdict)
            .bind(decision.result.as_ref().map(Value::to_string))
            .bind(&decision.made_by)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        }
        sqlx::query(
            "UPDATE runs SET status = 'queued', updated_ms = ? WHERE id = ? AND status IN ('paused', 'in_doubt')",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))
    }

    async fn decisions(&self, id: &str) -> Result<Vec<Decision>, StoreError> {
        let sql =
            "SELECT call_id, verdict, result, made_by FROM decisions WHERE run_id = ? AND used = 0 ORDER BY made_ms";
        let rows = sqlx::query_as(sql).bind(id).fetch_all(&self.pool).await.map_err(|e| self.error(e))?;
        decisions_from(rows)
    }

    async fn counts(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        let rows = sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        status_counts(rows)
    }

    async fn create_key(&self, key: NewKey) -> Result<ApiKey, StoreError> {
        let (id, secret) = new_secret();
        let created_ms = now_ms();
        sqlx::query("INSERT INTO api_keys (id, tenant, scopes, max_runs, hash, created_ms) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&id)
            .bind(&key.tenant)
            .bind(scopes_text(&key.scopes))
            .bind(i64::from(key.max_runs))
            .bind(hash_secret(&secret))
            .bind(created_ms)
            .execute(&self.writer)
            .await
            .map_err(|e| self.error(e))?;
        Ok(key.issued(id, secret, created_ms))
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        row.map(|r| key_from(&r).map_err(|e| self.error(e))).transpose()
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ms");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await.map_err(|e| self.error(e))?;
        rows.iter().map(|r| key_from(r).map_err(|e| self.error(e))).collect()
    }

    async fn due_webhooks(&self, limit: u32, hold: Duration) -> Result<Vec<Webhook>, StoreError> {
        const DUE: &str = "delivered_ms IS NULL AND gave_up_ms IS NULL AND next_ms <= ?";
        // Looked for on a reader first: an idle outbox takes no write lock.
        let any: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT 1 FROM webhooks WHERE {DUE}")))
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let sql = format!(
            "UPDATE webhooks SET next_ms = ? WHERE id IN (SELECT id FROM webhooks WHERE {DUE} ORDER BY next_ms LIMIT ?) \
             RETURNING {WEBHOOK_COLUMNS}"
        );
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now.saturating_add(millis(hold)))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.writer)
            .await
            .map_err(|e| self.error(e))?;
        Ok(webhooks_from(rows))
    }

    async fn webhook_delivered(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhooks SET delivered_ms = ?, last_error = NULL WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn webhook_failed(&self, id: &str, error: &str, retry: Option<Duration>) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "UPDATE webhooks SET attempts = attempts + 1, last_error = ?, next_ms = ?, gave_up_ms = ? WHERE id = ?",
        )
        .bind(error)
        .bind(now.saturating_add(retry.map_or(0, millis)))
        .bind(retry.is_none().then_some(now))
        .bind(id)
        .execute(&self.writer)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// Run `id` as stored.
pub(crate) async fn run_by_id(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Result<Option<Run>, StoreError>, sqlx::Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *conn).await?;
    Ok(row.map(|r| run_from(&r)).transpose())
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `owner` (host/pid/nonce) was a process of this host that has exited: its runs need
/// not wait for its lease to run out.
pub(crate) fn owner_is_gone(owner: &str) -> bool {
    let mut parts = owner.split('/');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else { return false };
    if host != crate::hostname() {
        return false;
    }
    let Ok(pid) = pid.parse::<libc::pid_t>() else { return false };
    if pid == std::process::id() as libc::pid_t {
        return false;
    }
    // Signal 0 checks that the process exists without touching it.
    // SAFETY: kill with signal 0 has no effect beyond the check.
    let alive =
        unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}
