//! The store's schema: created on first open, kept on reopen, and a newer one refused with a clear
//! error rather than misread, on SQLite and on PostgreSQL.

use reagent_store::{RunStore, SqliteStore, StoreError};

#[tokio::test]
async fn a_store_from_a_newer_reagent_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let location = path.to_str().unwrap();
    let store = SqliteStore::open(location).await.unwrap();
    assert!(store.keys().await.unwrap().is_empty());
    drop(store);
    assert!(SqliteStore::open(location).await.is_ok(), "reopening keeps the schema");

    let store = SqliteStore::open(&format!("sqlite:{location}")).await.unwrap();
    drop(store);
    set_schema_version(location, 99).await;
    match SqliteStore::open(location).await {
        Err(error @ StoreError::NewerSchema { found: 99, .. }) => {
            let message = error.to_string();
            assert!(message.contains("use a newer reagent"), "{message}");
        }
        other => panic!("expected NewerSchema, got {:?}", other.map(|_| "a store")),
    }
}

/// Sets the file's schema version as a newer reagent would.
async fn set_schema_version(location: &str, version: i64) {
    use sqlx::Connection;
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite:{location}")).await.unwrap();
    let sql = format!("PRAGMA user_version = {version}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut connection).await.unwrap();
}

#[path = "../../tests/common/postgres.rs"]
mod postgres;

#[tokio::test]
async fn a_postgres_store_from_a_newer_reagent_is_refused_by_name() {
    use reagent_store::PostgresStore;
    use sqlx::Connection;
    let url = tokio::task::spawn_blocking(postgres::database).await.unwrap();
    drop(PostgresStore::open(&url).await.unwrap());
    assert!(PostgresStore::open(&url).await.is_ok(), "reopening keeps the schema");
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE reagent_schema SET version = 99").execute(&mut connection).await.unwrap();
    match PostgresStore::open(&url).await {
        Err(error @ StoreError::NewerSchema { found: 99, .. }) => {
            assert!(error.to_string().contains("use a newer reagent"), "{error}");
        }
        other => panic!("expected NewerSchema, got {:?}", other.map(|_| "a store")),
    }
}
