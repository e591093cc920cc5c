//! Group commit for the SQLite adapter: the journal writes of every run in the process go
//! through one writer task, which applies whatever has queued up in one transaction and with a
//! handful of statements (one per table, many rows each), then answers each writer. Each write
//! is still fenced by its run's owner and gets its own result; a batch never holds two writes of
//! one run, so each run's writes land in the order it made them.

use std::collections::{HashMap, HashSet};

use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::{Commit, Status, StoreError, now_ms};

/// The most writes applied in one transaction.
const MAX_BATCH: usize = 128;

/// Rows per multi-row statement (SQLite allows 32766 parameters; at most 8 per row here).
const ROWS_PER_STATEMENT: usize = 1000;

pub(crate) struct Queued {
    pub(crate) run: String,
    pub(crate) owner: String,
    pub(crate) commit: Commit,
    pub(crate) done: oneshot::Sender<Result<u64, StoreError>>,
}

/// Starts the writer task on `writer` (a pool of one connection); it ends when every sender is
/// dropped.
pub(crate) fn start(writer: SqlitePool, place: String) -> mpsc::UnboundedSender<Queued> {
    let (sender, mut queue) = mpsc::unbounded_channel::<Queued>();
    tokio::spawn(async move {
        let mut carried: Option<Queued> = None;
        loop {
            let first = match carried.take() {
                Some(first) => first,
                None => match queue.recv().await {
                    Some(first) => first,
                    None => return,
                },
            };
            let mut runs = HashSet::from([first.run.clone()]);
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                let Ok(next) = queue.try_recv() else { break };
                if !runs.insert(next.run.clone()) {
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
                Ok(results) => {
                    for (queued, result) in batch.into_iter().zip(results) {
                        let _ = queued.done.send(result);
                    }
                }
                Err(e) => {
                    for queued in batch {
                        let error = StoreError::Database { place: place.clone(), message: e.to_string() };
                        let _ = queued.done.send(Err(error));
                    }
                }
            }
        }
    });
    sender
}

/// Applies a batch in one transaction: each write's result (its run's last seq, or why it was
/// refused), or the database's error for all of them.
async fn apply(conn: &mut SqliteConnection, batch: &[Queued]) -> Result<Vec<Result<u64, StoreError>>, sqlx::Error> {
    let sync = batch.iter().any(|q| q.commit.sync);
    if sync {
        sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
    }
    let applied = async {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let results = apply_in(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(results)
    }
    .await;
    if sync {
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
    }
    applied
}

async fn apply_in(conn: &mut SqliteConnection, batch: &[Queued]) -> Result<Vec<Result<u64, StoreError>>, sqlx::Error> {
    let now = now_ms();
    // The fences and the runs' new states, in one statement: only an owner's write lands.
    let mut lasts: HashMap<String, i64> = HashMap::new();
    for chunk in batch.chunks(ROWS_PER_STATEMENT / 8) {
        let sql = format!(
            "UPDATE runs SET last_seq = runs.last_seq + v.column3, updated_ms = v.column4, \
             checkpoint = COALESCE(v.column5, runs.checkpoint), status = COALESCE(v.column6, runs.status), \
             outcome = COALESCE(v.column7, runs.outcome) FROM (VALUES {}) AS v \
             WHERE runs.id = v.column1 AND runs.owner = v.column2 RETURNING runs.id, runs.last_seq",
            rows("(?, ?, ?, ?, ?, ?, ?)", chunk.len())
        );
        let mut update = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
        for queued in chunk {
            let commit = &queued.commit;
            update = update
                .bind(&queued.run)
                .bind(&queued.owner)
                .bind(i64::try_from(commit.events.len()).unwrap_or(i64::MAX))
                .bind(now)
                .bind(commit.checkpoint.as_deref())
                .bind(commit.status.map(Status::as_str))
                .bind(commit.outcome.as_ref().map(|o| o.to_string()));
        }
        lasts.extend(update.fetch_all(&mut *conn).await?);
    }
    let landed: Vec<(&Queued, i64)> = batch.iter().filter_map(|q| lasts.get(&q.run).map(|last| (q, *last))).collect();

    let mut events = Vec::new();
    for (queued, last) in &landed {
        let first = last - queued.commit.events.len() as i64 + 1;
        for (offset, event) in queued.commit.events.iter().enumerate() {
            events.push((queued.run.as_str(), first + offset as i64, event.as_str()));
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
        .flat_map(|(q, _)| {
            q.commit.replies.iter().map(|(turn, body)| (q.run.as_str(), i64::from(*turn), body.to_string()))
        })
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
        landed.iter().flat_map(|(q, _)| q.commit.started.iter().map(|c| (q.run.as_str(), c))).collect();
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
        .flat_map(|(q, _)| {
            q.commit.finished.iter().map(|(key, result)| (q.run.as_str(), key.as_str(), result.to_string()))
        })
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

    let used: Vec<(&str, &str)> = landed
        .iter()
        .flat_map(|(q, _)| q.commit.used_decisions.iter().map(|call| (q.run.as_str(), call.as_str())))
        .collect();
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

    let mut results = Vec::with_capacity(batch.len());
    for queued in batch {
        let result = match lasts.get(&queued.run) {
            Some(last) => Ok(u64::try_from(*last).unwrap_or(0)),
            None => Err(refused(conn, &queued.run).await?),
        };
        results.push(result);
    }
    Ok(results)
}

/// Why a run's write did not land: no such run, or another owner holds it.
async fn refused(conn: &mut SqliteConnection, run: &str) -> Result<StoreError, sqlx::Error> {
    let holder: Option<Option<String>> =
        sqlx::query_scalar("SELECT owner FROM runs WHERE id = ?").bind(run).fetch_optional(&mut *conn).await?;
    Ok(match holder {
        None => StoreError::NoSuchRun(run.to_string()),
        Some(holder) => StoreError::NotOwner { run: run.to_string(), owner: holder.unwrap_or_else(|| "nobody".into()) },
    })
}

/// `count` copies of a row's placeholders, comma-separated.
fn rows(row: &str, count: usize) -> String {
    vec![row; count].join(", ")
}
