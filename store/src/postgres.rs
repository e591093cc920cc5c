//! The PostgreSQL adapter: one database that many processes (workers, API nodes) share. The runs
//! table is the queue (`claim_next`: `FOR UPDATE SKIP LOCKED`, claims taken one at a time so that
//! per-tenant counts hold); every journal write is one transaction fenced by the run's owner and
//! lease, by the database's clock. A commit is durable against a crashed worker as soon as it
//! returns; one with `sync` (the record before a side-effect call) waits for the WAL flush, so it
//! is durable against a crashed database server too, the others do not (`synchronous_commit =
//! off` for them: a server crash may lose their last fraction of a second, which the loop redoes
//! the same way).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::keys::{new_secret, scopes_text};
use crate::rows::{
    KEY_COLUMNS, RUN_COLUMNS, WEBHOOK_COLUMNS, calls_from, decisions_from, events_from, key_from, run_from,
    status_counts, webhooks_from,
};
use crate::schema::{POSTGRES_MIGRATIONS, VERSION};
use crate::sqlite::{millis, owner_is_gone};
use crate::{
    ApiKey, CallEntry, Commit, Created, Decision, NewKey, NewRun, Queue, Run, RunFilter, RunStore, Status, StoreError,
    StoredEvent, Webhook, hash_secret, new_run_id,
};

/// Milliseconds since the epoch by the database's clock: leases mean the same on every machine.
const NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Advisory lock keys (transaction-scoped): migrations, and claims from the queue.
const MIGRATION_LOCK: i64 = 0x7265_6167_0001;
const CLAIM_LOCK: i64 = 0x7265_6167_0002;

/// Connections per process, unless the URL's `?max_connections=` says otherwise (stripped
/// before it reaches Postgres).
const POOL_SIZE: u32 = 10;

pub struct PostgresStore {
    pool: PgPool,
    /// The URL without its password, for messages.
    place: String,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`) and brings its
    /// schema up to date. `?max_connections=N` sets the pool's size.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let (url, size) = pool_size(url);
        let place = without_password(&url);
        let failed = |e: sqlx::Error| StoreError::Database { place: place.clone(), message: e.to_string() };
        let options: PgConnectOptions = url.parse().map_err(failed)?;
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(failed)?;
        let store = PostgresStore { pool, place };
        store.migrate().await?;
        Ok(store)
    }

    fn error(&self, e: sqlx::Error) -> StoreError {
        StoreError::Database { place: self.place.clone(), message: e.to_string() }
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(|e| self.error(e))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        loop {
            let mut tx = self.begin().await?;
            // Processes starting at once migrate one after the other.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            sqlx::raw_sql("CREATE TABLE IF NOT EXISTS reagent_schema (version BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM reagent_schema")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            let found = found.unwrap_or(0);
            if found > VERSION {
                return Err(StoreError::NewerSchema { place: self.place.clone(), found, known: VERSION });
            }
            if found == VERSION {
                return tx.commit().await.map_err(|e| self.error(e));
            }
            let step = usize::try_from(found).unwrap_or(0);
            sqlx::raw_sql(sqlx::AssertSqlSafe(POSTGRES_MIGRATIONS[step]))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            sqlx::query("DELETE FROM reagent_schema").execute(&mut *tx).await.map_err(|e| self.error(e))?;
            sqlx::query("INSERT INTO reagent_schema (version) VALUES ($1)")
                .bind(found + 1)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            tx.commit().await.map_err(|e| self.error(e))?;
        }
    }

    /// Applies `commit` in `tx` if `owner` holds the run and its lease: the run's last seq.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        id: &str,
        owner: &str,
        commit: &Commit,
    ) -> Result<Result<u64, StoreError>, sqlx::Error> {
        let count = i64::try_from(commit.events.len()).unwrap_or(i64::MAX);
        let sql = format!(
            "UPDATE runs SET last_seq = last_seq + $3, updated_ms = {NOW}, checkpoint = COALESCE($4, checkpoint), \
             status = COALESCE($5, status), outcome = COALESCE($6, outcome), \
             owner = CASE WHEN $7 THEN NULL ELSE owner END, lease_until = CASE WHEN $7 THEN 0 ELSE lease_until END \
             WHERE id = $1 AND owner = $2 AND lease_until >= {NOW} RETURNING last_seq"
        );
        let last: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(owner)
            .bind(count)
            .bind(commit.checkpoint.as_deref())
            .bind(commit.status.map(Status::as_str))
            .bind(commit.outcome.as_ref().map(Value::to_string))
            .bind(commit.release)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(last) = last else {
            let holder: Option<Option<String>> =
                sqlx::query_scalar("SELECT owner FROM runs WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
            return Ok(Err(StoreError::refused(id, owner, holder)));
        };
        if !commit.events.is_empty() {
            sqlx::query(
                "INSERT INTO events (run_id, seq, body) \
                 SELECT $1, $2 + ord, body FROM UNNEST($3::TEXT[]) WITH ORDINALITY AS e(body, ord)",
            )
            .bind(id)
            .bind(last - count)
            .bind(&commit.events)
            .execute(&mut *tx)
            .await?;
        }
        if !commit.replies.is_empty() {
            let turns: Vec<i64> = commit.replies.iter().map(|(turn, _)| i64::from(*turn)).collect();
            let bodies: Vec<String> = commit.replies.iter().map(|(_, body)| body.to_string()).collect();
            sqlx::query(
                "INSERT INTO replies (run_id, turn, body) SELECT $1, turn, body FROM UNNEST($2::BIGINT[], $3::TEXT[]) \
                 AS r(turn, body) ON CONFLICT (run_id, turn) DO UPDATE SET body = excluded.body",
            )
            .bind(id)
            .bind(turns)
            .bind(bodies)
            .execute(&mut *tx)
            .await?;
        }
        // Calls: rows as they start, then results onto them (a result never arrives without its row).
        if !commit.started.is_empty() {
            let column = |f: fn(&CallEntry) -> String| commit.started.iter().map(f).collect::<Vec<String>>();
            let sql = format!(
                "INSERT INTO calls (run_id, key, tool, arguments, effect, started_ms) \
                 SELECT $1, key, tool, arguments, effect, {NOW} \
                 FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[]) AS c(key, tool, arguments, effect) \
                 ON CONFLICT (run_id, key) DO UPDATE SET started_ms = excluded.started_ms"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(column(|c| c.key.clone()))
                .bind(column(|c| c.tool.clone()))
                .bind(column(|c| c.arguments.to_string()))
                .bind(column(|c| c.effect.clone()))
                .execute(&mut *tx)
                .await?;
        }
        if !commit.finished.is_empty() {
            let keys: Vec<&str> = commit.finished.iter().map(|(key, _)| key.as_str()).collect();
            let results: Vec<String> = commit.finished.iter().map(|(_, result)| result.to_string()).collect();
            let sql = format!(
                "UPDATE calls SET result = f.result, finished_ms = {NOW} FROM UNNEST($2::TEXT[], $3::TEXT[]) \
                 AS f(key, result) WHERE calls.run_id = $1 AND calls.key = f.key"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(keys).bind(results).execute(&mut *tx).await?;
        }
        if !commit.used_decisions.is_empty() {
            sqlx::query("UPDATE decisions SET used = TRUE WHERE run_id = $1 AND NOT used AND call_id = ANY($2)")
                .bind(id)
                .bind(&commit.used_decisions)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(status) = commit.status.filter(|s| s.is_final()) {
            // The run's webhook, committed with its final state (at most one per run).
            let (webhook, body) = Webhook::for_run(id, status, commit.outcome.as_ref());
            let sql = format!(
                "INSERT INTO webhooks (id, run_id, url, body, next_ms, created_ms) \
                 SELECT $1, id, callback_url, $2, {NOW}, {NOW} FROM runs WHERE id = $3 AND callback_url IS NOT NULL \
                 ON CONFLICT (id) DO NOTHING"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(webhook).bind(body).bind(id).execute(&mut *tx).await?;
        }
        Ok(Ok(u64::try_from(last).unwrap_or(0)))
    }

    /// Records a run as `create` does, in `tx`.
    async fn create_in(&self, tx: &mut PgConnection, run: &NewRun) -> Result<Created, StoreError> {
        let failed = |e| self.error(e);
        if let Some((key, digest)) = &run.idempotency {
            // Two submissions with one key at once: the second waits, then finds the first.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))")
                .bind(format!("idempotency\n{}\n{key}", run.tenant))
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            let found: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT id, request_digest FROM runs WHERE tenant = $1 AND idempotency_key = $2")
                    .bind(&run.tenant)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(failed)?;
            if let Some((id, earlier)) = found {
                if earlier.as_deref() != Some(digest.as_str()) {
                    return Ok(Created::KeyReused);
                }
                return run_in(tx, &id).await.map_err(failed)?.map(Created::Existing).ok_or(StoreError::NoSuchRun(id));
            }
        }
        if let Some((key_id, max_runs)) = &run.key {
            // The key's count holds across every API node: its submissions take turns.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 2))")
                .bind(key_id)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            let unfinished: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM runs WHERE key_id = $1 AND status IN ('queued', 'running', 'paused', 'in_doubt')",
            )
            .bind(key_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(failed)?;
            if unfinished >= i64::from(*max_runs) {
                return Ok(Created::OverLimit);
            }
        }
        let sql = format!(
            "INSERT INTO runs (id, tenant, agent, snapshot, task, inputs, status, key_id, idempotency_key, \
             request_digest, callback_url, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $10, {NOW}, {NOW}) RETURNING {RUN_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(new_run_id())
            .bind(&run.tenant)
            .bind(&run.agent)
            .bind(run.snapshot.to_string())
            .bind(&run.task)
            .bind(run.inputs.to_string())
            .bind(run.key.as_ref().map(|(k, _)| k.as_str()))
            .bind(run.idempotency.as_ref().map(|(k, _)| k.as_str()))
            .bind(run.idempotency.as_ref().map(|(_, d)| d.as_str()))
            .bind(run.callback_url.as_deref())
            .fetch_one(&mut *tx)
            .await
            .map_err(failed)?;
        run_from(&row).map(Created::New)
    }
}

/// The run `claim_next` takes ($1 the per-tenant limit, $2 the agents, empty for all): a waiting
/// run asked to cancel first (it only has to end); else, of the tenants with claimable runs (found
/// by skipping through the `runs_claimable` index, one probe per tenant), the one with the fewest
/// live claims, and its oldest claimable run.
fn next_run_sql() -> String {
    let agent = "(CARDINALITY($2::TEXT[]) = 0 OR r.agent = ANY($2))";
    let free = format!("(r.owner IS NULL OR r.lease_until < {NOW})");
    format!(
        "WITH RECURSIVE waiting AS ( \
           (SELECT tenant FROM runs WHERE status IN ('queued', 'running') ORDER BY tenant LIMIT 1) \
           UNION ALL \
           SELECT (SELECT r.tenant FROM runs r WHERE r.status IN ('queued', 'running') AND r.tenant > w.tenant \
                   ORDER BY r.tenant LIMIT 1) FROM waiting w WHERE w.tenant IS NOT NULL), \
         claimed AS (SELECT tenant, COUNT(*) AS n FROM runs WHERE owner IS NOT NULL AND lease_until >= {NOW} \
                     GROUP BY tenant) \
         SELECT id FROM ( \
           (SELECT r.id, -1::BIGINT AS n FROM runs r WHERE r.cancel_requested AND r.status IN ('paused', 'in_doubt') \
            AND {free} AND {agent} ORDER BY r.id LIMIT 1) \
           UNION ALL \
           (SELECT next.id, COALESCE(c.n, 0) FROM waiting w LEFT JOIN claimed c ON c.tenant = w.tenant \
            CROSS JOIN LATERAL (SELECT r.id FROM runs r WHERE r.tenant = w.tenant \
              AND r.status IN ('queued', 'running') AND {free} AND {agent} ORDER BY r.id LIMIT 1) next \
            WHERE w.tenant IS NOT NULL AND COALESCE(c.n, 0) < $1 ORDER BY COALESCE(c.n, 0), next.id LIMIT 1) \
         ) candidates ORDER BY n LIMIT 1"
    )
}

/// Run `id` as stored, read in `conn`.
async fn run_in(conn: &mut PgConnection, id: &str) -> Result<Option<Run>, sqlx::Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *conn).await?;
    row.map(|r| run_from(&r).map_err(|e| sqlx::Error::Decode(Box::new(e)))).transpose()
}

#[async_trait]
impl RunStore for PostgresStore {
    async fn create(&self, run: NewRun) -> Result<Created, StoreError> {
        let mut tx = self.begin().await?;
        let created = self.create_in(&mut tx, &run).await?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(created)
    }

    async fn get(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        run_in(&mut conn, id).await.map_err(|e| self.error(e))
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::TEXT IS NULL OR tenant = $1) AND ($2::TEXT IS NULL OR status = $2) \
             AND ($3::TEXT IS NULL OR agent = $3) AND ($4::TEXT IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
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
        let rows = sqlx::query_as("SELECT seq, body FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(id)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        events_from(rows)
    }

    async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Option<Run>, StoreError> {
        // Free, already ours, or past its lease; else a holder that is a process of this host
        // that has exited, taken over at once.
        let sql = format!(
            "UPDATE runs SET owner = $2, lease_until = {NOW} + $3 WHERE id = $1 \
             AND (owner IS NULL OR owner = $2 OR lease_until < {NOW} OR owner = $4) RETURNING {RUN_COLUMNS}"
        );
        let take = |gone_holder: Option<&str>| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(id.to_string())
                .bind(owner.to_string())
                .bind(millis(lease))
                .bind(gone_holder.map(str::to_string))
                .fetch_optional(&self.pool)
        };
        if let Some(row) = take(None).await.map_err(|e| self.error(e))? {
            return run_from(&row).map(Some);
        }
        let holder: Option<Option<String>> = sqlx::query_scalar("SELECT owner FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let Some(Some(holder)) = holder else { return Ok(None) };
        if !owner_is_gone(&holder) {
            return Err(StoreError::NotOwner { run: id.to_string(), owner: holder });
        }
        let row = take(Some(&holder)).await.map_err(|e| self.error(e))?;
        row.map(|r| run_from(&r)).transpose()
    }

    async fn claim_next(&self, owner: &str, lease: Duration, queue: &Queue) -> Result<Option<Run>, StoreError> {
        let mut tx = self.begin().await?;
        // Claims take turns (each a few milliseconds), so that the per-tenant counts they read
        // stay true until they commit; rows other transactions hold are skipped, not waited for.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        let id: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(next_run_sql()))
            .bind(queue.per_tenant.map_or(i64::MAX, i64::from))
            .bind(&queue.agents)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        let Some(id) = id else { return Ok(None) };
        let sql = format!(
            "UPDATE runs SET owner = $2, lease_until = {NOW} + $3 \
             WHERE id = (SELECT id FROM runs WHERE id = $1 FOR UPDATE SKIP LOCKED) RETURNING {RUN_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&id)
            .bind(owner)
            .bind(millis(lease))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        // A row another transaction holds is skipped, not waited for: the next poll takes it.
        row.map(|r| run_from(&r)).transpose()
    }

    async fn renew(&self, id: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        let sql =
            format!("UPDATE runs SET lease_until = {NOW} + $3 WHERE id = $1 AND owner = $2 AND lease_until >= {NOW}");
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(owner)
            .bind(millis(lease))
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET owner = NULL, lease_until = 0 WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn commit(&self, id: &str, owner: &str, commit: Commit) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        if !commit.sync {
            sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await.map_err(|e| self.error(e))?;
        }
        let applied = self.apply(&mut tx, id, owner, &commit).await.map_err(|e| self.error(e))?;
        match applied {
            Ok(last) => {
                tx.commit().await.map_err(|e| self.error(e))?;
                Ok(last)
            }
            Err(refused) => Err(refused),
        }
    }

    async fn reply(&self, id: &str, turn: u32) -> Result<Option<Value>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM replies WHERE run_id = $1 AND turn = $2")
            .bind(id)
            .bind(i64::from(turn))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        body.map(|b| crate::rows::json(&b, "a model reply")).transpose()
    }

    async fn calls(&self, id: &str) -> Result<Vec<CallEntry>, StoreError> {
        let sql = "SELECT key, tool, arguments, effect, result FROM calls WHERE run_id = $1 ORDER BY started_ms, key";
        let rows = sqlx::query_as(sql).bind(id).fetch_all(&self.pool).await.map_err(|e| self.error(e))?;
        calls_from(rows)
    }

    async fn cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        let asked: Option<bool> = sqlx::query_scalar("SELECT cancel_requested FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(asked.unwrap_or(false))
    }

    async fn request_cancel(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let sql = format!(
            "UPDATE runs SET cancel_requested = TRUE, updated_ms = {NOW} WHERE id = $1 RETURNING {RUN_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        row.map(|r| run_from(&r)).transpose()
    }

    async fn orphaned(&self) -> Result<Vec<String>, StoreError> {
        let sql = format!("SELECT id, owner FROM runs WHERE owner IS NOT NULL AND lease_until >= {NOW} ORDER BY id");
        let held: Vec<(String, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await.map_err(|e| self.error(e))?;
        Ok(held.into_iter().filter(|(_, owner)| owner_is_gone(owner)).map(|(id, _)| id).collect())
    }

    async fn decide(&self, id: &str, decisions: &[Decision]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let failed = |e| self.error(e);
        for decision in decisions {
            sqlx::query("DELETE FROM decisions WHERE run_id = $1 AND call_id = $2 AND NOT used")
                .bind(id)
                .bind(&decision.call_id)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            let sql = format!(
                "INSERT INTO decisions (run_id, call_id, verdict, result, made_by, made_ms) \
                 VALUES ($1, $2, $3, $4, $5, {NOW})"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(&decision.call_id)
                .bind(&decision.verdict)
                .bind(decision.result.as_ref().map(Value::to_string))
                .bind(&decision.made_by)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        let sql = format!(
            "UPDATE runs SET status = 'queued', updated_ms = {NOW} WHERE id = $1 AND status IN ('paused', 'in_doubt')"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).execute(&mut *tx).await.map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn decisions(&self, id: &str) -> Result<Vec<Decision>, StoreError> {
        let sql = "SELECT call_id, verdict, result, made_by FROM decisions WHERE run_id = $1 AND NOT used \
                   ORDER BY made_ms";
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
        let sql = format!(
            "INSERT INTO api_keys (id, tenant, scopes, max_runs, hash, created_ms) VALUES ($1, $2, $3, $4, $5, {NOW}) \
             RETURNING created_ms"
        );
        let created_ms: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&id)
            .bind(&key.tenant)
            .bind(scopes_text(&key.scopes))
            .bind(i64::from(key.max_runs))
            .bind(hash_secret(&secret))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(key.issued(id, secret, created_ms))
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1");
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
        let sql = format!(
            "UPDATE webhooks SET next_ms = {NOW} + $2 WHERE id IN (SELECT id FROM webhooks \
             WHERE delivered_ms IS NULL AND gave_up_ms IS NULL AND next_ms <= {NOW} ORDER BY next_ms LIMIT $1 \
             FOR UPDATE SKIP LOCKED) RETURNING {WEBHOOK_COLUMNS}"
        );
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .bind(millis(hold))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(webhooks_from(rows))
    }

    async fn webhook_delivered(&self, id: &str) -> Result<(), StoreError> {
        let sql = format!("UPDATE webhooks SET delivered_ms = {NOW}, last_error = NULL WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).execute(&self.pool).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn webhook_failed(&self, id: &str, error: &str, retry: Option<Duration>) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE webhooks SET attempts = attempts + 1, last_error = $2, next_ms = {NOW} + COALESCE($3, 0), \
             gave_up_ms = CASE WHEN $3 IS NULL THEN {NOW} END WHERE id = $1"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(error)
            .bind(retry.map(millis))
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// The URL without `max_connections=N` among its parameters, and the pool size it gave.
fn pool_size(url: &str) -> (String, u32) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), POOL_SIZE) };
    let mut size = POOL_SIZE;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("max_connections=").map(str::parse::<u32>) {
            Some(Ok(n)) if n > 0 => {
                size = n;
                false
            }
            _ => true,
        })
        .collect();
    match kept.is_empty() {
        true => (base.to_string(), size),
        false => (format!("{base}?{}", kept.join("&")), size),
    }
}

/// `url` with its password (if any) replaced by `***`, for messages and logs.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let Some((credentials, host)) = authority.rsplit_once('@') else { return url.to_string() };
    let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
    let masked = if credentials.contains(':') { format!("{user}:***") } else { user.to_string() };
    let path = if rest.contains('/') { format!("/{path}") } else { String::new() };
    format!("{scheme}://{masked}@{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(without_password("postgres://me:s3cret@db:5432/runs"), "postgres://me:***@db:5432/runs");
        assert_eq!(without_password("postgres://me@db/runs"), "postgres://me@db/runs");
        assert_eq!(without_password("postgres://db/runs"), "postgres://db/runs");
    }

    #[test]
    fn the_pool_size_comes_off_the_url() {
        assert_eq!(pool_size("postgres://db/runs?max_connections=4"), ("postgres://db/runs".into(), 4));
        assert_eq!(
            pool_size("postgres://db/runs?sslmode=disable&max_connections=4"),
            ("postgres://db/runs?sslmode=disable".into(), 4)
        );
        assert_eq!(pool_size("postgres://db/runs"), ("postgres://db/runs".into(), POOL_SIZE));
    }
}
