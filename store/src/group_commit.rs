//! Group commit for the SQLite adapter: the runs' creations, claims and journal writes of every
//! run in the process go through one writer task, which applies whatever has queued up in one
//! transaction (journal writes with a handful of statements, one per table, many rows each),
//! then answers each writer. Each journal write is still fenced by its run's owner and gets its
//! own result; a batch never holds two writes of one run, so each run's writes land in the order
//! it made them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{RUN_COLUMNS, run_from};
use crate::sqlite::{millis, owner_is_gone, run_by_id};
use crate::{Commit, Created, NewRun, Run, Status, StoreError, Webhook, new_run_id, now_ms};

/// The most writes applied in one transaction.
const MAX_BATCH: usize = 128;

/// Rows per multi-row statement (SQLite allows 32766 parameters; at most 12 per row here).
const ROWS_PER_STATEMENT: usize = 1000;

/// Where a write's answer goes.
pub(crate) type Done<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write for the writer task, with where its answer goes.
pub(crate) enum Write {
    Create { run: NewRun, done: Done<Created> },
    Claim { id: String, owner: String, lease: Duration, done: Done<Option<Run>> },
    Commit { run: String, owner: String, commit: Commit, done: Done<u64> },
}

/// A journal write as the batch applies it.
#[derive(Clone, Copy)]
struct Journalled<'a> {
    run: &'a str,
    owner: &'a str,
    commit: &'a Commit,
}

impl Write {
    /// The existing run it writes to.
    fn run(&self) -> Option<&str> {
        match self {
            Write::Create { .. } => None,
            Write::Claim { id, .. } => Some(id),
            Write::Commit { run, .. } => Some(run),
        }
    }
}

/// One transaction's writes, by kind, each kind in the order it came.
#[derive(Default)]
struct Batch {
    creates: Vec<(NewRun, Done<Created>)>,
    claims: Vec<(String, String, Duration, Done<Option<Run>>)>,
    commits: Vec<(String, String, Commit, Done<u64>)>,
}

/// A batch's answers, in the order of its writes of each kind.
struct Answers {
    created: Vec<Result<Created, StoreError>>,
    claimed: Vec<Result<Option<Run>, StoreError>>,
    committed: Vec<Result<u64, StoreError>>,
}

impl Batch {
    fn len(&self) -> usize {
        self.creates.len() + self.claims.len() + self.commits.len()
    }

    fn push(&mut self, write: Write) {
        match write {
            Write::Create { run, done } => self.creates.push((run, done)),
            Write::Claim { id, owner, lease, done } => self.claims.push((id, owner, lease, done)),
            Write::Commit { run, owner, commit, done } => self.commits.push((run, owner, commit, done)),
        }
    }

    fn answer(self, answers: Answers) {
        for ((_, done), answer) in self.creates.into_iter().zip(answers.created) {
            let _ = done.send(answer);
        }
        for ((.., done), answer) in self.claims.into_iter().zip(answers.claimed) {
            let _ = done.send(answer);
        }
        for ((.., done), answer) in self.commits.into_iter().zip(answers.committed) {
            let _ = done.send(answer);
        }
    }

    fn fail(self, error: impl Fn() -> StoreError) {
        for (_, done) in self.creates {
            let _ = done.send(Err(error()));
        }
        for (.., done) in self.claims {
            let _ = done.send(Err(error()));
        }
        for (.., done) in self.commits {
            let _ = done.send(Err(error()));
        }
    }
}

/// Starts the writer task on `writer` (a pool of one connection); it ends when every sender is
/// dropped.
pub(crate) fn start(writer: SqlitePool, place: String) -> mpsc::UnboundedSender<Write> {
    let (sender, mut queue) = mpsc::unbounded_channel::<Write>();
    tokio::spawn(async move {
        let mut carried: Option<Write> = None;
        loop {
            let first = match carried.take() {
                Some(first) => first,
                None => match queue.recv().await {
                    Some(first) => first,
                    None => return,
                },
            };
            let mut runs: HashSet<String> = first.run().map(str::to_string).into_iter().collect();
            let mut batch = Batch::default();
            batch.push(first);
            while batch.len() < MAX_BATCH {
                let Ok(next) = queue.try_recv() else { break };
                if let Some(run) = next.run()
                    && !runs.insert(run.to_string())
                {
                    carried = Some(next); // the run's next write goes in the next batch, after this one
                    break;
                }
                batch.push(next);
            }
            let results = match writer.acquire().await {
                Ok(mut conn) => apply(&mut conn, &batch).await,
                Err(e) => Err(e),
            };
            match results {
                Ok(answers) => batch.answer(answers),
                Err(e) => batch.fail(|| StoreError::Database { place: place.clone(), message: e.to_string() }),
            }
        }
    });
    sender
}

/// Applies a batch in one transaction: each write's answer (for a journal write, its run's last
/// seq or why it was refused), or the database's error for all of them.
async fn apply(conn: &mut SqliteConnection, batch: &Batch) -> Result<Answers, sqlx::Error> {
    let sync = batch.commits.iter().any(|(_, _, commit, _)| commit.sync);
    if sync {
        sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
    }
    let applied = async {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let created = create_all(&mut tx, &batch.creates.iter().map(|(run, _)| run).collect::<Vec<_>>()).await?;
        let claims: Vec<(&str, &str, Duration)> =
            batch.claims.iter().map(|(id, owner, lease, _)| (id.as_str(), owner.as_str(), *lease)).collect();
        let claimed = claim_all(&mut tx, &claims).await?;
        let journalled: Vec<Journalled<'_>> =
            batch.commits.iter().map(|(run, owner, commit, _)| Journalled { run, owner, commit }).collect();
        let committed = apply_commits(&mut tx, &journalled).await?;
        tx.commit().await?;
        Ok(Answers { created, claimed, committed })
    }
    .await;
    if sync {
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
    }
    applied
}

/// Applies journal writes: each one's result, its run's last seq or why it
/// was refused.
async fn apply_commits(
    conn: &mut SqliteConnection,
    batch: &[Journalled<'_>],
) -> Result<Vec<Result<u64, StoreError>>, sqlx::Error> {
    let now = now_ms();
    // The fences and the runs' new states, in one statement: only the write of an owner whose
    // lease still holds lands.
    let mut lasts: HashMap<String, i64> = HashMap::new();
    for chunk in batch.chunks(ROWS_PER_STATEMENT / 8) {
        let sql = format!(
            "UPDATE runs SET last_seq = runs.last_seq + v.column3, updated_ms = v.column4, \
             checkpoint = COALESCE(v.column5, runs.checkpoint), status = COALESCE(v.column6, runs.status), \
             outcome = COALESCE(v.column7, runs.outcome), \
             owner = CASE WHEN v.column8 THEN NULL ELSE runs.owner END, \
             lease_until = CASE WHEN v.column8 THEN 0 ELSE runs.lease_until END FROM (VALUES {}) AS v \
             WHERE runs.id = v.column1 AND runs.owner = v.column2 AND runs.lease_until >= {now} \
             RETURNING runs.id, runs.last_seq",
            rows("(?, ?, ?, ?, ?, ?, ?, ?)", chunk.len())
        );
        let mut update = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
        for queued in chunk {
            let commit = &queued.commit;
            update = update
                .bind(queued.run)
                .bind(queued.owner)
                .bind(i64::try_from(commit.events.len()).unwrap_or(i64::MAX))
                .bind(now)
                .bind(commit.checkpoint.as_deref())
                .bind(commit.status.map(Status::as_str))
                .bind(commit.outcome.as_ref().map(|o| o.to_string()))
                .bind(commit.release);
        }
        lasts.extend(update.fetch_all(&mut *conn).await?);
    }
    let landed: Vec<(&Journalled, i64)> =
        batch.iter().filter_map(|q| lasts.get(q.run).map(|last| (q, *last))).collect();

    let mut events = Vec::new();
    for (queued, last) in &landed {
        let first = last - queued.commit.events.len() as i64 + 1;
        for (offset, event) in queued.commit.events.iter().enumerate() {
            events.push((queued.run, first + offset as i64, event.as_str()));
        }
    }
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("INSERT INTO events (run_id, seq, body) VALUES {}", rows("(?, ?, ?)", chunk.len()));
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (run, seq, body) in chunk {
            insert = insert.bind(*run).bind(*seq).bind(*body);
        }
        insert.execute(&mut *conn).await?;
    }

    let replies: Vec<(&str, i64, String)> = landed
        .iter()
        .flat_map(|(q, _)| q.commit.replies.iter().map(|(turn, body)| (q.run, i64::from(*turn), body.to_string())))
        .collect();
    for chunk in replies.chunks(ROWS_PER_STATEMENT) {
        let sql =
            format!("INSERT OR REPLACE INTO replies (run_id, turn, body) VALUES {}", rows("(?, ?, ?)", chunk.len()));
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (run, turn, body) in chunk {
            insert = insert.bind(*run).bind(*turn).bind(body);
        }
        insert.execute(&mut *conn).await?;
    }

    // Calls: rows as they start, then results onto them (a result never arrives without its row).
    let started: Vec<(&str, &crate::CallEntry)> =
        landed.iter().flat_map(|(q, _)| q.commit.started.iter().map(|c| (q.run, c))).collect();
    for chunk in started.chunks(ROWS_PER_STATEMENT / 6) {
        let sql = format!(
            "INSERT INTO calls (run_id, key, tool, arguments, effect, started_ms) VALUES {} \
             ON CONFLICT (run_id, key) DO UPDATE SET started_ms = excluded.started_ms",
            rows("(?, ?, ?, ?, ?, ?)", chunk.len())
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (run, call) in chunk {
            insert = insert
                .bind(*run)
                .bind(&call.key)
                .bind(&call.tool)
                .bind(call.arguments.to_string())
                .bind(&call.effect)
                .bind(now);
        }
        insert.execute(&mut *conn).await?;
    }
    let finished: Vec<(&str, &str, String)> = landed
        .iter()
        .flat_map(|(q, _)| q.commit.finished.iter().map(|(key, result)| (q.run, key.as_str(), result.to_string())))
        .collect();
    for chunk in finished.chunks(ROWS_PER_STATEMENT / 3) {
        let sql = format!(
            "UPDATE calls SET result = v.column3, finished_ms = {now} FROM (VALUES {}) AS v \
             WHERE calls.run_id = v.column1 AND calls.key = v.column2",
            rows("(?, ?, ?)", chunk.len())
        );
        let mut update = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (run, key, result) in chunk {
            update = update.bind(*run).bind(*key).bind(result);
        }
        update.execute(&mut *conn).await?;
    }

    let used: Vec<(&str, &str)> =
        landed.iter().flat_map(|(q, _)| q.commit.used_decisions.iter().map(|call| (q.run, call.as_str()))).collect();
    for chunk in used.chunks(ROWS_PER_STATEMENT / 2) {
        let sql = format!(
            "UPDATE decisions SET used = 1 WHERE used = 0 AND (run_id, call_id) IN (VALUES {})",
            rows("(?, ?)", chunk.len())
        );
        let mut update = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (run, call) in chunk {
            update = update.bind(*run).bind(*call);
        }
        update.execute(&mut *conn).await?;
    }

    // Runs that end with a callback URL: their webhooks, with their final state.
    for (queued, _) in &landed {
        let Some(status) = queued.commit.status.filter(|s| s.is_final()) else { continue };
        let (webhook, body) = Webhook::for_run(queued.run, status, queued.commit.outcome.as_ref());
        sqlx::query(
            "INSERT OR IGNORE INTO webhooks (id, run_id, url, body, next_ms, created_ms) \
             SELECT ?, id, callback_url, ?, ?, ? FROM runs WHERE id = ? AND callback_url IS NOT NULL",
        )
        .bind(webhook)
        .bind(body)
        .bind(now)
        .bind(now)
        .bind(queued.run)
        .execute(&mut *conn)
        .await?;
    }

    let mut results = Vec::with_capacity(batch.len());
    for queued in batch {
        let result = match lasts.get(queued.run) {
            Some(last) => Ok(u64::try_from(*last).unwrap_or(0)),
            None => Err(refused(conn, queued.run, queued.owner).await?),
        };
        results.push(result);
    }
    Ok(results)
}

/// Why `owner`'s write to a run did not land: no such run, another owner holds it, or its lease
/// ran out.
async fn refused(conn: &mut SqliteConnection, run: &str, owner: &str) -> Result<StoreError, sqlx::Error> {
    let holder: Option<Option<String>> =
        sqlx::query_scalar("SELECT owner FROM runs WHERE id = ?").bind(run).fetch_optional(&mut *conn).await?;
    Ok(StoreError::refused(run, owner, holder))
}

/// `count` copies of a row's placeholders, comma-separated.
fn rows(row: &str, count: usize) -> String {
    vec![row; count].join(", ")
}

/// Records new runs, each as `create` does; those without a key to check first several to a
/// statement.
async fn create_all(
    conn: &mut SqliteConnection,
    runs: &[&NewRun],
) -> Result<Vec<Result<Created, StoreError>>, sqlx::Error> {
    let plain = |run: &&NewRun| run.idempotency.is_none() && run.key.is_none();
    let mut inserted = insert_runs(conn, &runs.iter().copied().filter(plain).collect::<Vec<_>>()).await?.into_iter();
    let mut created = Vec::with_capacity(runs.len());
    for run in runs {
        created.push(match plain(run) {
            true => inserted.next().unwrap_or_else(not_inserted).map(Created::New),
            false => create(conn, run).await?,
        });
    }
    Ok(created)
}

fn not_inserted() -> Result<Run, StoreError> {
    Err(StoreError::Corrupt("a run was not inserted".into()))
}

/// Records a new run, `queued`, unless its idempotency key was used before or its API key is at
/// its limit of unfinished runs.
async fn create(conn: &mut SqliteConnection, run: &NewRun) -> Result<Result<Created, StoreError>, sqlx::Error> {
    if let Some((key, digest)) = &run.idempotency {
        let found = sqlx::query("SELECT id, request_digest FROM runs WHERE tenant = ? AND idempotency_key = ?")
            .bind(&run.tenant)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = found {
            let (id, earlier): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
            if earlier.as_deref() != Some(digest.as_str()) {
                return Ok(Ok(Created::KeyReused));
            }
            let existing = run_by_id(conn, &id).await?;
            return Ok(existing.and_then(|found| found.ok_or(StoreError::NoSuchRun(id))).map(Created::Existing));
        }
    }
    if let Some((key_id, max_runs)) = &run.key {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE key_id = ? AND status IN ('queued', 'running', 'paused', 'in_doubt')",
        )
        .bind(key_id)
        .fetch_one(&mut *conn)
        .await?;
        if unfinished >= i64::from(*max_runs) {
            return Ok(Ok(Created::OverLimit));
        }
    }
    let mut inserted = insert_runs(conn, &[run]).await?;
    Ok(inserted.pop().unwrap_or_else(not_inserted).map(Created::New))
}

/// Inserts new runs, `queued`, with one statement per `ROWS_PER_STATEMENT / 12` of them: each
/// run as stored, in order.
async fn insert_runs(
    conn: &mut SqliteConnection,
    runs: &[&NewRun],
) -> Result<Vec<Result<Run, StoreError>>, sqlx::Error> {
    let now = now_ms();
    let mut inserted = Vec::with_capacity(runs.len());
    for chunk in runs.chunks(ROWS_PER_STATEMENT / 12) {
        let ids: Vec<String> = chunk.iter().map(|_| new_run_id()).collect();
        let sql = format!(
            "INSERT INTO runs (id, tenant, agent, snapshot, task, inputs, status, key_id, idempotency_key, \
             request_digest, callback_url, created_ms, updated_ms) VALUES {} RETURNING {RUN_COLUMNS}",
            rows("(?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)", chunk.len())
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, run) in ids.iter().zip(chunk) {
            insert = insert
                .bind(id)
                .bind(&run.tenant)
                .bind(&run.agent)
                .bind(run.snapshot.to_string())
                .bind(&run.task)
                .bind(run.inputs.to_string())
                .bind(run.key.as_ref().map(|(k, _)| k.as_str()))
                .bind(run.idempotency.as_ref().map(|(k, _)| k.as_str()))
                .bind(run.idempotency.as_ref().map(|(_, d)| d.as_str()))
                .bind(run.callback_url.as_deref())
                .bind(now)
                .bind(now);
        }
        let mut stored: HashMap<String, Result<Run, StoreError>> = HashMap::new();
        for row in insert.fetch_all(&mut *conn).await? {
            let id: String = row.try_get(0)?;
            stored.insert(id, run_from(&row));
        }
        for id in &ids {
            inserted.push(stored.remove(id).unwrap_or_else(|| Err(StoreError::NoSuchRun(id.clone()))));
        }
    }
    Ok(inserted)
}

/// Gives each run (id, owner, lease) to its owner if it is free, held by that
/// owner, held past its lease, or held by a process of this host that has exited; `None` for a
/// run that is not there. The free ones are taken with one statement.
async fn claim_all(
    conn: &mut SqliteConnection,
    claims: &[(&str, &str, Duration)],
) -> Result<Vec<Result<Option<Run>, StoreError>>, sqlx::Error> {
    let now = now_ms();
    let mut taken: HashMap<String, Result<Run, StoreError>> = HashMap::new();
    for chunk in claims.chunks(ROWS_PER_STATEMENT / 3) {
        let sql = format!(
            "UPDATE runs SET owner = v.column2, lease_until = v.column3 FROM (VALUES {}) AS v \
             WHERE runs.id = v.column1 AND (runs.owner IS NULL OR runs.owner = v.column2 OR runs.lease_until < {now}) \
             RETURNING {}",
            rows("(?, ?, ?)", chunk.len()),
            RUN_COLUMNS.split(", ").map(|c| format!("runs.{c}")).collect::<Vec<_>>().join(", ")
        );
        let mut update = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, owner, lease) in chunk {
            update = update.bind(*id).bind(*owner).bind(now.saturating_add(millis(*lease)));
        }
        for row in update.fetch_all(&mut *conn).await? {
            let id: String = row.try_get(0)?;
            taken.insert(id, run_from(&row));
        }
    }
    let mut claimed = Vec::with_capacity(claims.len());
    for (id, owner, lease) in claims {
        claimed.push(match taken.remove(*id) {
            Some(run) => run.map(Some),
            None => held(conn, id, owner, *lease).await?,
        });
    }
    Ok(claimed)
}

/// A claim on a run that was not free: taken over from a holder whose process is gone, refused
/// while the holder lives, `None` when there is no such run.
async fn held(
    conn: &mut SqliteConnection,
    id: &str,
    owner: &str,
    lease: Duration,
) -> Result<Result<Option<Run>, StoreError>, sqlx::Error> {
    let holder: Option<Option<String>> =
        sqlx::query_scalar("SELECT owner FROM runs WHERE id = ?").bind(id).fetch_optional(&mut *conn).await?;
    let Some(Some(holder)) = holder else { return Ok(Ok(None)) };
    if !owner_is_gone(&holder) {
        return Ok(Err(StoreError::NotOwner { run: id.to_string(), owner: holder }));
    }
    let sql = format!("UPDATE runs SET owner = ?, lease_until = ? WHERE id = ? AND owner = ? RETURNING {RUN_COLUMNS}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(now_ms().saturating_add(millis(lease)))
        .bind(id)
        .bind(&holder)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| run_from(&r)).transpose())
}
