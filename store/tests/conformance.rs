//! The run store's conformance suite: every behaviour the runs above rely on, checked against
//! both adapters, SQLite (a temporary file) and PostgreSQL (a real server on loopback, started by
//! the suite). Each check is written once, against `dyn RunStore`.

#[path = "../../tests/common/postgres.rs"]
mod postgres;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reagent_store::{
    CallEntry, Commit, Created, Decision, NewKey, NewRun, PostgresStore, Queue, Run, RunFilter, RunStore, Scope,
    SqliteStore, Status, StoreError, hash_secret,
};
use serde_json::json;

/// A store of each kind, with what keeps it alive.
struct Fixture {
    store: Arc<dyn RunStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db").to_str().unwrap()).await.unwrap();
    Fixture { store: Arc::new(store), _dir: Some(dir) }
}

async fn postgres() -> Fixture {
    let url = tokio::task::spawn_blocking(postgres::database).await.unwrap();
    Fixture { store: Arc::new(PostgresStore::open(&url).await.unwrap()), _dir: None }
}

/// Each check, once per adapter.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() { super::$check(&*super::sqlite().await.store).await })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() { super::$check(&*super::postgres().await.store).await })*
        }
    };
}

conformance!(
    runs_are_recorded_queued_and_listed_newest_first,
    an_idempotency_key_gives_back_its_run_and_refuses_another_request,
    a_keys_unfinished_runs_are_limited,
    commits_number_events_without_gaps_and_land_whole,
    a_claimed_run_refuses_other_owners_until_its_lease_runs_out,
    a_write_after_the_lease_ran_out_is_refused,
    a_release_lets_the_run_go,
    claims_from_the_queue_go_to_the_quietest_tenant_first_within_its_limit,
    concurrent_claimers_take_each_run_once,
    a_tenant_limit_holds_under_concurrent_claimers,
    the_journal_keeps_replies_calls_and_decisions,
    cancels_are_recorded_for_the_driver_to_hear,
    runs_of_a_dead_local_process_are_orphans,
    keys_are_stored_hashed,
    a_final_state_commits_one_webhook_which_is_held_while_sent_and_retried_under_its_id,
);

const LEASE: Duration = Duration::from_secs(30);

fn new_run(tenant: &str, agent: &str) -> NewRun {
    NewRun {
        tenant: tenant.into(),
        agent: agent.into(),
        snapshot: json!({"file": "agent.yaml"}),
        task: "do it".into(),
        inputs: json!({}),
        idempotency: None,
        key: None,
        callback_url: None,
    }
}

async fn create(store: &dyn RunStore, tenant: &str, agent: &str) -> Run {
    match store.create(new_run(tenant, agent)).await.unwrap() {
        Created::New(run) => run,
        other => panic!("expected a new run, got {other:?}"),
    }
}

fn events(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| json!({"kind": t}).to_string()).collect()
}

async fn runs_are_recorded_queued_and_listed_newest_first(store: &dyn RunStore) {
    let first = create(store, "a", "calc").await;
    // Run ids order by the millisecond they were made in.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let second = create(store, "b", "ledger").await;
    assert_eq!(first.status, Status::Queued);
    assert_eq!(first.last_seq, 0);
    let got = store.get(&first.id).await.unwrap().unwrap();
    assert_eq!((got.task.as_str(), got.inputs.clone(), got.snapshot.clone()), ("do it", json!({}), first.snapshot));
    assert!(store.get("run_missing").await.unwrap().is_none());
    let all = store.list(&RunFilter { limit: 10, ..RunFilter::default() }).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), [second.id.clone(), first.id.clone()]);
    let of_a = store.list(&RunFilter { tenant: Some("a".into()), limit: 10, ..RunFilter::default() }).await.unwrap();
    assert_eq!(of_a.len(), 1);
    let page = store.list(&RunFilter { before: Some(second.id), limit: 10, ..RunFilter::default() }).await.unwrap();
    assert_eq!(page.len(), 1);
    let counts = store.counts().await.unwrap();
    assert_eq!(counts, [(Status::Queued, 2)]);
}

async fn an_idempotency_key_gives_back_its_run_and_refuses_another_request(store: &dyn RunStore) {
    let keyed = |digest: &str| NewRun { idempotency: Some(("k1".into(), digest.into())), ..new_run("a", "calc") };
    let Created::New(run) = store.create(keyed("d1")).await.unwrap() else { panic!("a new run") };
    match store.create(keyed("d1")).await.unwrap() {
        Created::Existing(again) => assert_eq!(again.id, run.id),
        other => panic!("expected the same run, got {other:?}"),
    }
    assert!(matches!(store.create(keyed("d2")).await.unwrap(), Created::KeyReused));
    // Another tenant's key of the same name is its own.
    let other = NewRun { tenant: "b".into(), ..keyed("d2") };
    assert!(matches!(store.create(other).await.unwrap(), Created::New(_)));
}

async fn a_keys_unfinished_runs_are_limited(store: &dyn RunStore) {
    let limited = || NewRun { key: Some(("key_1".into(), 2)), ..new_run("a", "calc") };
    let Created::New(first) = store.create(limited()).await.unwrap() else { panic!("first") };
    assert!(matches!(store.create(limited()).await.unwrap(), Created::New(_)));
    assert!(matches!(store.create(limited()).await.unwrap(), Created::OverLimit));
    store.claim(&first.id, "w", LEASE).await.unwrap();
    let done = Commit { status: Some(Status::Answered), release: true, ..Commit::default() };
    store.commit(&first.id, "w", done).await.unwrap();
    assert!(matches!(store.create(limited()).await.unwrap(), Created::New(_)), "a finished run frees its place");
}

async fn commits_number_events_without_gaps_and_land_whole(store: &dyn RunStore) {
    let run = create(store, "a", "calc").await;
    store.claim(&run.id, "w", LEASE).await.unwrap().unwrap();
    assert_eq!(
        store.commit(&run.id, "w", Commit { events: events(&["a", "b"]), ..Commit::default() }).await.unwrap(),
        2
    );
    let with_checkpoint = Commit {
        events: events(&["c"]),
        checkpoint: Some(json!({"step": 1}).to_string()),
        status: Some(Status::Running),
        sync: true,
        ..Commit::default()
    };
    assert_eq!(store.commit(&run.id, "w", with_checkpoint).await.unwrap(), 3);
    let stored = store.events(&run.id, 0, 100).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(stored[2].body, json!({"kind": "c"}));
    assert_eq!(store.events(&run.id, 1, 1).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    let got = store.get(&run.id).await.unwrap().unwrap();
    assert_eq!((got.status, got.last_seq, got.checkpoint), (Status::Running, 3, Some(json!({"step": 1}))));
    // A refused commit writes nothing at all.
    let refused = store.commit(&run.id, "intruder", Commit { events: events(&["x"]), ..Commit::default() }).await;
    assert!(matches!(refused, Err(StoreError::NotOwner { .. })), "{refused:?}");
    assert_eq!(store.get(&run.id).await.unwrap().unwrap().last_seq, 3);
    let missing = store.commit("run_missing", "w", Commit::default()).await;
    assert!(matches!(missing, Err(StoreError::NoSuchRun(_))), "{missing:?}");
}

async fn a_claimed_run_refuses_other_owners_until_its_lease_runs_out(store: &dyn RunStore) {
    let run = create(store, "a", "calc").await;
    let short = Duration::from_millis(400);
    assert!(store.claim(&run.id, "w1", short).await.unwrap().is_some());
    assert!(store.claim(&run.id, "w1", short).await.unwrap().is_some(), "its owner may claim it again");
    let taken = store.claim(&run.id, "w2", LEASE).await;
    assert!(matches!(taken, Err(StoreError::NotOwner { ref owner, .. }) if owner == "w1"), "{taken:?}");
    assert!(store.renew(&run.id, "w1", short).await.unwrap());
    assert!(!store.renew(&run.id, "w2", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(store.claim(&run.id, "w2", LEASE).await.unwrap().is_some(), "taken over after the lease ran out");
    // The old owner, back from a pause, can write nothing more.
    let late = store.commit(&run.id, "w1", Commit { events: events(&["late"]), ..Commit::default() }).await;
    assert!(matches!(late, Err(StoreError::NotOwner { ref owner, .. }) if owner == "w2"), "{late:?}");
    assert!(!store.renew(&run.id, "w1", LEASE).await.unwrap());
    assert_eq!(store.events(&run.id, 0, 10).await.unwrap().len(), 0);
    assert!(store.claim("run_missing", "w1", LEASE).await.unwrap().is_none());
}

async fn a_write_after_the_lease_ran_out_is_refused(store: &dyn RunStore) {
    let run = create(store, "a", "calc").await;
    store.claim(&run.id, "w1", Duration::from_millis(300)).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Nobody took it yet, but the lease is gone: the owner may not write as if it still held it.
    let late = store.commit(&run.id, "w1", Commit { events: events(&["late"]), ..Commit::default() }).await;
    assert!(matches!(late, Err(StoreError::LeaseExpired { .. })), "{late:?}");
    assert!(!store.renew(&run.id, "w1", LEASE).await.unwrap(), "a lease that ran out is not renewed");
    let next = store.claim_next("w2", LEASE, &Queue::default()).await.unwrap();
    assert_eq!(next.map(|r| r.id), Some(run.id), "the queue offers it again");
}

async fn a_release_lets_the_run_go(store: &dyn RunStore) {
    let run = create(store, "a", "calc").await;
    store.claim(&run.id, "w1", LEASE).await.unwrap().unwrap();
    store.release(&run.id, "w2").await.unwrap();
    assert!(matches!(store.claim(&run.id, "w2", LEASE).await, Err(StoreError::NotOwner { .. })), "not w2's to release");
    store.release(&run.id, "w1").await.unwrap();
    assert!(store.claim(&run.id, "w2", LEASE).await.unwrap().is_some());
    // A commit that releases lets go too.
    store
        .commit(&run.id, "w2", Commit { status: Some(Status::Queued), release: true, ..Commit::default() })
        .await
        .unwrap();
    assert!(store.claim(&run.id, "w3", LEASE).await.unwrap().is_some());
}

async fn claims_from_the_queue_go_to_the_quietest_tenant_first_within_its_limit(store: &dyn RunStore) {
    // Run ids order by the millisecond they were made in: one each.
    let mut made = Vec::new();
    for (tenant, agent) in
        [("busy", "calc"), ("busy", "calc"), ("busy", "calc"), ("quiet", "calc"), ("quiet", "ledger")]
    {
        made.push(create(store, tenant, agent).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (busy, quiet, other_agent) = (&made[..3], &made[3], &made[4]);
    let calc_only = Queue { agents: vec!["calc".into()], per_tenant: Some(2) };
    let take = || async { store.claim_next("w", LEASE, &calc_only).await.unwrap().map(|r| r.id) };
    assert_eq!(take().await, Some(busy[0].id.clone()), "oldest first while no tenant holds any");
    assert_eq!(take().await, Some(quiet.id.clone()), "then the tenant with the fewest claimed");
    assert_eq!(take().await, Some(busy[1].id.clone()));
    assert_eq!(take().await, None, "`busy` is at its limit of 2 and `quiet` has no calc run left");
    // A finished run frees its tenant's place.
    let done = Commit { status: Some(Status::Answered), release: true, ..Commit::default() };
    store.commit(&busy[0].id, "w", done).await.unwrap();
    assert_eq!(take().await, Some(busy[2].id.clone()));
    let any = store.claim_next("w", LEASE, &Queue::default()).await.unwrap().map(|r| r.id);
    assert_eq!(any, Some(other_agent.id.clone()), "without a filter, any agent's run");
    assert_eq!(store.claim_next("w", LEASE, &Queue::default()).await.unwrap().map(|r| r.id), None);
}

async fn concurrent_claimers_take_each_run_once(store: &dyn RunStore) {
    let mut created = HashSet::new();
    for n in 0..24 {
        created.insert(create(store, &format!("t{}", n % 3), "calc").await.id);
    }
    let taken: Vec<Vec<String>> = claim_all_at_once(store, 6, &Queue::default()).await;
    let all: Vec<String> = taken.concat();
    let unique: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "a run was claimed twice");
    assert_eq!(unique, created);
}

/// `claimers` owners claiming from `queue` at once until it gives nothing: what each took.
async fn claim_all_at_once(store: &dyn RunStore, claimers: usize, queue: &Queue) -> Vec<Vec<String>> {
    // Polled together on this task: the store's own connections give the concurrency.
    futures::future::join_all((0..claimers).map(|n| async move {
        let owner = format!("w{n}");
        let mut mine = Vec::new();
        while let Some(run) = store.claim_next(&owner, LEASE, queue).await.unwrap() {
            mine.push(run.id);
        }
        mine
    }))
    .await
}

async fn a_tenant_limit_holds_under_concurrent_claimers(store: &dyn RunStore) {
    let mut tenant_of = std::collections::HashMap::new();
    for n in 0..15 {
        let run = create(store, &format!("t{}", n % 3), "calc").await;
        tenant_of.insert(run.id, run.tenant);
    }
    let limited = Queue { agents: Vec::new(), per_tenant: Some(2) };
    let taken = claim_all_at_once(store, 6, &limited).await.concat();
    let mut per_tenant = std::collections::HashMap::<&String, usize>::new();
    for id in &taken {
        *per_tenant.entry(&tenant_of[id]).or_default() += 1;
    }
    assert_eq!(per_tenant.len(), 3, "every tenant got its turn: {per_tenant:?}");
    assert!(per_tenant.values().all(|n| *n == 2), "two claims a tenant, never more: {per_tenant:?}");
}

async fn the_journal_keeps_replies_calls_and_decisions(store: &dyn RunStore) {
    let run = create(store, "a", "ledger").await;
    store.claim(&run.id, "w", LEASE).await.unwrap();
    let call = |key: &str| CallEntry {
        key: key.into(),
        tool: "append".into(),
        arguments: json!({"line": key}),
        effect: "side_effect".into(),
        result: None,
    };
    let started = Commit {
        replies: vec![(1, json!({"text": "calling"}))],
        started: vec![call("call_1_1"), call("call_1_2")],
        sync: true,
        ..Commit::default()
    };
    store.commit(&run.id, "w", started).await.unwrap();
    let finished = Commit { finished: vec![("call_1_1".into(), json!({"ok": true}))], ..Commit::default() };
    store.commit(&run.id, "w", finished).await.unwrap();
    assert_eq!(store.reply(&run.id, 1).await.unwrap(), Some(json!({"text": "calling"})));
    assert_eq!(store.reply(&run.id, 2).await.unwrap(), None);
    let calls = store.calls(&run.id).await.unwrap();
    assert_eq!(calls.len(), 2);
    let first = calls.iter().find(|c| c.key == "call_1_1").unwrap();
    assert_eq!(
        (first.result.clone(), first.arguments.clone()),
        (Some(json!({"ok": true})), json!({"line": "call_1_1"}))
    );
    assert!(calls.iter().find(|c| c.key == "call_1_2").unwrap().result.is_none(), "started, never finished");

    let paused = Commit { status: Some(Status::InDoubt), release: true, ..Commit::default() };
    store.commit(&run.id, "w", paused).await.unwrap();
    let decision = |verdict: &str| Decision {
        call_id: "call_1_2".into(),
        verdict: verdict.into(),
        result: None,
        made_by: "cli".into(),
    };
    store.decide(&run.id, &[decision("skip")]).await.unwrap();
    store.decide(&run.id, &[decision("retry")]).await.unwrap();
    assert_eq!(store.decisions(&run.id).await.unwrap(), [decision("retry")], "a later decision replaces one unused");
    assert_eq!(store.get(&run.id).await.unwrap().unwrap().status, Status::Queued, "deciding queues the run again");
    let taken = store.claim_next("w2", LEASE, &Queue::default()).await.unwrap().unwrap();
    assert_eq!(taken.id, run.id);
    store.commit(&run.id, "w2", Commit { used_decisions: vec!["call_1_2".into()], ..Commit::default() }).await.unwrap();
    assert!(store.decisions(&run.id).await.unwrap().is_empty(), "a used decision is never used twice");
}

async fn cancels_are_recorded_for_the_driver_to_hear(store: &dyn RunStore) {
    let run = create(store, "a", "calc").await;
    assert!(!store.cancel_requested(&run.id).await.unwrap());
    let asked = store.request_cancel(&run.id).await.unwrap().unwrap();
    assert!(asked.cancel_requested);
    assert!(store.cancel_requested(&run.id).await.unwrap());
    assert!(store.request_cancel("run_missing").await.unwrap().is_none());
}

async fn runs_of_a_dead_local_process_are_orphans(store: &dyn RunStore) {
    // A process of this host that has exited, and this (live) one.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let live = reagent_store::owner_id();
    let host = live.split('/').next().unwrap().to_string();
    let dead = format!("{host}/{}/0000", child.id());
    let _free = create(store, "a", "calc").await;
    let orphan = create(store, "a", "calc").await;
    let held = create(store, "a", "calc").await;
    let elsewhere = create(store, "a", "calc").await;
    store.claim(&orphan.id, &dead, LEASE).await.unwrap();
    store.claim(&held.id, &live, LEASE).await.unwrap();
    store.claim(&elsewhere.id, &format!("another-host/{}/0000", child.id()), LEASE).await.unwrap();
    assert_eq!(store.orphaned().await.unwrap(), std::slice::from_ref(&orphan.id), "only the dead local process's");
    assert!(store.claim(&orphan.id, &live, LEASE).await.unwrap().is_some(), "taken over at once");
    assert!(store.orphaned().await.unwrap().is_empty());
}

async fn a_final_state_commits_one_webhook_which_is_held_while_sent_and_retried_under_its_id(store: &dyn RunStore) {
    let hook = NewRun { callback_url: Some("https://hooks.example/run".into()), ..new_run("a", "calc") };
    let Created::New(run) = store.create(hook).await.unwrap() else { panic!("a new run") };
    let quiet = create(store, "a", "calc").await;
    for id in [&run.id, &quiet.id] {
        store.claim(id, "w", LEASE).await.unwrap();
        let paused = Commit { status: Some(Status::Paused), ..Commit::default() };
        store.commit(id, "w", paused).await.unwrap();
    }
    assert!(store.due_webhooks(10, LEASE).await.unwrap().is_empty(), "a run that waits is not over");
    for id in [&run.id, &quiet.id] {
        let done = Commit {
            status: Some(Status::Answered),
            outcome: Some(json!({"answer": "42"})),
            release: true,
            ..Commit::default()
        };
        store.commit(id, "w", done).await.unwrap();
    }
    let due = store.due_webhooks(10, Duration::from_millis(300)).await.unwrap();
    assert_eq!(due.len(), 1, "only the run with a callback: {due:?}");
    let webhook = &due[0];
    assert_eq!(
        (webhook.run_id.as_str(), webhook.url.as_str(), webhook.attempts),
        (run.id.as_str(), "https://hooks.example/run", 0)
    );
    let body: serde_json::Value = serde_json::from_str(&webhook.body).unwrap();
    assert_eq!(
        body,
        json!({"type": "run.finished", "data": {"run_id": run.id, "status": "answered", "outcome": {"answer": "42"}}})
    );
    assert!(store.due_webhooks(10, LEASE).await.unwrap().is_empty(), "held while one process sends it");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = store.due_webhooks(10, LEASE).await.unwrap();
    assert_eq!(
        again.iter().map(|w| w.id.clone()).collect::<Vec<_>>(),
        std::slice::from_ref(&webhook.id),
        "its sender died: due again"
    );
    store.webhook_failed(&webhook.id, "500", Some(Duration::ZERO)).await.unwrap();
    let retried = store.due_webhooks(10, LEASE).await.unwrap();
    assert_eq!((retried[0].id.as_str(), retried[0].attempts), (webhook.id.as_str(), 1), "retried under the same id");
    store.webhook_delivered(&webhook.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    store.webhook_failed(&webhook.id, "late", Some(Duration::ZERO)).await.unwrap();
    store.webhook_delivered(&webhook.id).await.unwrap();
    assert!(store.due_webhooks(10, LEASE).await.unwrap().is_empty(), "a delivered webhook is never sent again");
    let hook = NewRun { callback_url: Some("https://hooks.example/2".into()), ..new_run("a", "calc") };
    let Created::New(given_up) = store.create(hook).await.unwrap() else { panic!("a new run") };
    store.claim(&given_up.id, "w", LEASE).await.unwrap();
    store
        .commit(&given_up.id, "w", Commit { status: Some(Status::Failed), release: true, ..Commit::default() })
        .await
        .unwrap();
    let due = store.due_webhooks(10, LEASE).await.unwrap();
    store.webhook_failed(&due[0].id, "gone", None).await.unwrap();
    assert!(store.due_webhooks(10, LEASE).await.unwrap().is_empty(), "given up");
}

async fn keys_are_stored_hashed(store: &dyn RunStore) {
    let key = store
        .create_key(NewKey { tenant: "acme".into(), scopes: vec![Scope::Read, Scope::Approve], max_runs: 3 })
        .await
        .unwrap();
    let secret = key.secret.clone().expect("the secret, once");
    let found = store.key_by_hash(&hash_secret(&secret)).await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), found.tenant.as_str(), found.max_runs), (key.id.as_str(), "acme", 3));
    assert_eq!(found.scopes, [Scope::Read, Scope::Approve]);
    assert!(found.secret.is_none());
    assert!(store.key_by_hash(&hash_secret("wrong")).await.unwrap().is_none());
    assert_eq!(store.keys().await.unwrap().len(), 1);
}
