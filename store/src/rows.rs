//! Rows as the store's types, for both adapters: the columns are the same, and each database's
//! driver decodes text, integers and booleans for them.

use serde_json::Value;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::keys::parse_scopes;
use crate::{ApiKey, Run, Status, StoreError};

/// The columns `run_from` reads, in its order.
pub(crate) const RUN_COLUMNS: &str = "id, tenant, agent, task, inputs, status, outcome, last_seq, created_ms, \
                                      updated_ms, cancel_requested, snapshot, checkpoint";

/// The columns `key_from` reads, in its order.
pub(crate) const KEY_COLUMNS: &str = "id, tenant, scopes, max_runs, created_ms";

/// A row of `RUN_COLUMNS` as a run.
pub(crate) fn run_from<'r, R>(row: &'r R) -> Result<Run, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let corrupt = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    let text = |i: usize| row.try_get::<String, _>(i).map_err(corrupt);
    let optional = |i: usize| row.try_get::<Option<String>, _>(i).map_err(corrupt);
    let number = |i: usize| row.try_get::<i64, _>(i).map_err(corrupt);
    let status = text(5)?;
    Ok(Run {
        id: text(0)?,
        tenant: text(1)?,
        agent: text(2)?,
        task: text(3)?,
        inputs: json(&text(4)?, "a run's inputs")?,
        status: Status::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status `{status}`")))?,
        outcome: optional(6)?.map(|o| json(&o, "a run's outcome")).transpose()?,
        last_seq: u64::try_from(number(7)?).unwrap_or(0),
        created_ms: number(8)?,
        updated_ms: number(9)?,
        cancel_requested: row.try_get::<bool, _>(10).map_err(corrupt)?,
        snapshot: json(&text(11)?, "a run's agent snapshot")?,
        checkpoint: optional(12)?.map(|c| json(&c, "a run's checkpoint")).transpose()?,
    })
}

/// A row of `KEY_COLUMNS` as a key (without its secret, which is never stored).
pub(crate) fn key_from<'r, R>(row: &'r R) -> Result<ApiKey, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(ApiKey {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        scopes: parse_scopes(&row.try_get::<String, _>(2)?),
        max_runs: u32::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
        created_ms: row.try_get(4)?,
        secret: None,
    })
}

/// The columns `webhooks_from` reads, in its order.
pub(crate) const WEBHOOK_COLUMNS: &str = "id, run_id, url, body, attempts";

/// Rows of `WEBHOOK_COLUMNS` as deliveries.
pub(crate) fn webhooks_from(rows: Vec<(String, String, String, String, i64)>) -> Vec<crate::Webhook> {
    rows.into_iter()
        .map(|(id, run_id, url, body, attempts)| crate::Webhook {
            id,
            run_id,
            url,
            body,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        })
        .collect()
}

/// Counts of runs by status, from (status, count) rows.
pub(crate) fn status_counts(rows: Vec<(String, i64)>) -> Result<Vec<(Status, u64)>, StoreError> {
    rows.into_iter()
        .map(|(status, count)| {
            let status = Status::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status `{status}`")))?;
            Ok((status, u64::try_from(count).unwrap_or(0)))
        })
        .collect()
}

/// (key, tool, arguments, effect, result) rows as call entries.
pub(crate) fn calls_from(
    rows: Vec<(String, String, String, String, Option<String>)>,
) -> Result<Vec<crate::CallEntry>, StoreError> {
    rows.into_iter()
        .map(|(key, tool, arguments, effect, result)| {
            Ok(crate::CallEntry {
                key,
                tool,
                arguments: json(&arguments, "a call's arguments")?,
                effect,
                result: result.map(|r| json(&r, "a call's result")).transpose()?,
            })
        })
        .collect()
}

/// (call_id, verdict, result, made_by) rows as decisions.
pub(crate) fn decisions_from(
    rows: Vec<(String, String, Option<String>, String)>,
) -> Result<Vec<crate::Decision>, StoreError> {
    rows.into_iter()
        .map(|(call_id, verdict, result, made_by)| {
            Ok(crate::Decision {
                call_id,
                verdict,
                result: result.map(|r| json(&r, "a decision's result")).transpose()?,
                made_by,
            })
        })
        .collect()
}

/// (seq, body) rows as events.
pub(crate) fn events_from(rows: Vec<(i64, String)>) -> Result<Vec<crate::StoredEvent>, StoreError> {
    rows.into_iter()
        .map(|(seq, body)| {
            Ok(crate::StoredEvent { seq: u64::try_from(seq).unwrap_or(0), body: json(&body, "an event")? })
        })
        .collect()
}

pub(crate) fn json(text: &str, what: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
