//! `reagent serve` over real HTTP on loopback: a real server process, real clients (reqwest here;
//! the official `openai` Python client and schemathesis against /openapi.json).

mod common;

use std::process::Command;
use std::time::Duration;

use common::server::{Client, Server, Setup, answer};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_resubmission_with_its_idempotency_key_is_the_same_run_and_a_stream_resumes_where_it_dropped() {
    let setup = Setup::new(&[("a", 150, "")]);
    let server = setup.server();
    let client = Client::new(&server, None);
    let submit = |key: &str, task: &str| {
        client
            .request(reqwest::Method::POST, "/v1/runs")
            .header("Idempotency-Key", key)
            .json(&json!({"agent": "ledger-a", "task": task}))
    };
    let (status, run) = answer(submit("k1", "keep the ledger")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    assert_eq!(run["inputs"], json!({}), "inputs as submitted");
    let id = run["id"].as_str().unwrap().to_string();
    let again = submit("k1", "keep the ledger").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id, "the same key and body: the same run");
    let (status, error) = answer(submit("k1", "another task")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error["error"]["message"].as_str().unwrap().starts_with("Idempotency-Key:"), "{error}");

    // A follower drops after three events; the run goes on; resuming from the last id seen
    // yields exactly the events it missed, in order.
    let first = client.events(&id, None, Some(3)).await;
    assert_eq!(first.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1, 2, 3]);
    let rest = client.events(&id, Some(3), None).await;
    let whole = client.events(&id, None, None).await;
    let joined: Vec<_> = first.into_iter().chain(rest).collect();
    assert_eq!(joined, whole, "dropped and resumed = one whole stream");
    let seqs: Vec<u64> = whole.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=whole.len() as u64).collect::<Vec<_>>(), "gapless, in order");
    assert_eq!(whole.last().unwrap().1["status"], "answered", "a closed stream never stopped the run");
    let (status, output) = client.get(&format!("/v1/runs/{id}/output")).await;
    assert_eq!((status, output["answer"].clone()), (StatusCode::OK, json!("a is done.")));
    let (status, _) = client.get(&format!("/v1/runs/{id}/events?after=x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(setup.ledger(), ["a-1", "a-2"]);
}

#[tokio::test]
async fn keys_see_their_tenants_runs_within_their_scopes_and_limits() {
    let setup = Setup::new(&[("p", 0, "    approval: always\n"), ("q", 0, "")]);
    let server = setup.server();
    let (open_status, _) = Client::new(&server, None).get("/v1/runs").await;
    assert_eq!(open_status, StatusCode::OK, "no keys yet: open on loopback");
    let writer = server.key("acme", "runs:read,runs:write", 1);
    let reader = server.key("acme", "runs:read", 4);
    let approver = server.key("acme", "runs:read,runs:approve", 4);
    let other = server.key("globex", "runs:read,runs:write,runs:approve", 4);

    let (status, error) = Client::new(&server, None).get("/v1/runs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    assert_eq!(Client::new(&server, Some("rk_nope")).get("/v1/runs").await.0, StatusCode::UNAUTHORIZED);
    let (status, error) = Client::new(&server, Some(&reader)).submit("ledger-q").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("runs:write"), "{error}");

    // The writer's run pauses for approval: it stays unfinished, so a second is over the limit.
    let writing = Client::new(&server, Some(&writer));
    let (status, run) = writing.submit("ledger-p").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let paused = writing.settled(&id).await;
    assert_eq!(paused["status"], "paused");
    let call = paused["waiting"]["awaiting"][0]["id"].as_str().unwrap().to_string();
    let over = writing
        .request(reqwest::Method::POST, "/v1/runs")
        .json(&json!({"agent": "ledger-q", "task": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.headers()["retry-after"], "5");

    // Another tenant does not see it; the writer may not approve; the approver may, once.
    let others = Client::new(&server, Some(&other));
    assert_eq!(others.get(&format!("/v1/runs/{id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(others.get("/v1/runs").await.1["runs"], json!([]));
    let decision = json!({"decisions": [{"call_id": call, "verdict": "approve"}]});
    assert_eq!(others.post(&format!("/v1/runs/{id}/approvals"), decision.clone()).await.0, StatusCode::NOT_FOUND);
    assert_eq!(writing.post(&format!("/v1/runs/{id}/approvals"), decision.clone()).await.0, StatusCode::FORBIDDEN);
    let approving = Client::new(&server, Some(&approver));
    let wrong = json!({"decisions": [{"call_id": call, "verdict": "retry"}]});
    let (status, error) = approving.post(&format!("/v1/runs/{id}/approvals"), wrong).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error["error"]["message"].as_str().unwrap().starts_with("decisions[0].verdict:"), "{error}");
    let (status, _) = approving.post(&format!("/v1/runs/{id}/approvals"), decision.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Every call of this agent waits: the next one (echo) does; the first decision is used up.
    let mut run = approving.settled(&id).await;
    assert_eq!(run["status"], "paused", "{run}");
    assert_ne!(run["waiting"]["awaiting"][0]["id"], json!(call), "a decision is used once");
    let stale = approving.post(&format!("/v1/runs/{id}/approvals"), decision).await;
    assert_eq!(stale.0, StatusCode::UNPROCESSABLE_ENTITY, "a decision on a call no longer waiting: {}", stale.1);
    let mut deny = Value::Null;
    while run["status"] == "paused" {
        deny = json!({"decisions": [{"call_id": run["waiting"]["awaiting"][0]["id"], "verdict": "deny"}]});
        assert_eq!(approving.post(&format!("/v1/runs/{id}/approvals"), deny.clone()).await.0, StatusCode::ACCEPTED);
        run = approving.settled(&id).await;
    }
    assert_eq!(run["status"], "answered", "{run}");
    assert_eq!(approving.post(&format!("/v1/runs/{id}/approvals"), deny).await.0, StatusCode::CONFLICT);
    assert_eq!(setup.ledger(), ["p-1"], "approved once, the rest denied");
    let (_, events) = approving.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(events["outcome"]["answer"], "p is done.");

    // Its run ended: the writer may submit again.
    assert_eq!(writing.submit("ledger-q").await.0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn bad_requests_get_4xx_that_name_the_field_never_5xx() {
    let setup = Setup::new(&[("b", 0, "")]);
    let server = setup.server();
    let client = Client::new(&server, None);
    let raw = |body: &str, content_type: &str| {
        client.request(reqwest::Method::POST, "/v1/runs").header("content-type", content_type).body(body.to_string())
    };
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (raw("{\"agent\": ", "application/json"), StatusCode::BAD_REQUEST, "EOF"),
        (raw("{\"agent\": \"ledger-b\"}", "application/json"), StatusCode::UNPROCESSABLE_ENTITY, "task"),
        (raw("{\"agent\": \"ledger-b\", \"task\": 7}", "application/json"), StatusCode::UNPROCESSABLE_ENTITY, "task"),
        (
            raw("{\"agent\": \"ledger-b\", \"task\": \"t\", \"inputs\": []}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "inputs",
        ),
        (
            raw("{\"agent\": \"ledger-b\", \"task\": \"t\", \"extra\": 1}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "extra",
        ),
        (
            raw("{\"agent\": \"nobody\", \"task\": \"t\"}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent:",
        ),
        (
            raw("{\"agent\": \"ledger-b\", \"task\": \"  \"}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "task:",
        ),
        (
            raw("{\"agent\": \"ledger-b\", \"task\": \"t\", \"inputs\": {\"x\": 1}}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "inputs:",
        ),
        (raw("agent=ledger-b", "text/plain"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json"),
        (
            raw(&format!("{{\"agent\": \"ledger-b\", \"task\": \"{}\"}}", "x".repeat(300_000)), "application/json"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "length limit",
        ),
    ];
    for (request, expected, names) in cases {
        let (status, error) = answer(request).await;
        assert_eq!(status, expected, "{error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "`{names}` in: {message}");
    }
    assert_eq!(client.get("/v1/runs?limit=0").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(client.get("/v1/runs?status=lost").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(client.get("/v1/runs/run_nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(client.get("/v1/runs/run_nope?wait=soon").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(client.get("/v2/anything").await.0, StatusCode::NOT_FOUND);
    let (status, error) = client.post("/v1/runs/run_nope/approvals", json!({"decisions": []})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
}

#[tokio::test]
async fn cancel_stops_a_run_at_its_next_safe_point_and_is_idempotent() {
    let setup = Setup::new(&[("c", 400, "")]);
    let server = setup.server();
    let client = Client::new(&server, None);
    let (_, run) = client.submit("ledger-c").await;
    let id = run["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = client.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ended = client.settled(&id).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    let (status, again) = client.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!((status, again["status"].clone()), (StatusCode::OK, json!("cancelled")));
    let events = client.events(&id, None, None).await;
    assert_eq!(events.last().unwrap().1["status"], "cancelled");
    assert!(setup.ledger().len() < 2, "it stopped before its end: {:?}", setup.ledger());
    assert_eq!(client.get(&format!("/v1/runs/{id}/output")).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_finished_run_is_fetched_as_a_recording_with_its_events_and_model_turns() {
    let setup = Setup::new(&[("r", 0, "")]);
    let server = setup.server();
    let client = Client::new(&server, None);
    let (_, run) = client.submit("ledger-r").await;
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(client.settled(&id).await["status"], "answered");
    let (status, recording) = client.get(&format!("/v1/runs/{id}/recording")).await;
    assert_eq!(status, StatusCode::OK, "{recording}");
    assert_eq!(recording["about"]["run"], id.as_str());
    let streamed: Vec<Value> = client.events(&id, None, None).await.into_iter().map(|(_, e)| e).collect();
    let recorded = recording["events"].as_array().unwrap();
    assert_eq!(recorded.len(), streamed.len());
    let steps = recorded.iter().filter(|e| e["event"] == "step_started").count();
    assert_eq!(recording["script"]["turns"].as_array().map(Vec::len), Some(steps), "a turn per step: {recording}");
    let (status, _) = client.get("/v1/runs/run_nope/recording").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sigterm_drains_runs_to_a_turn_boundary_and_the_next_start_finishes_them() {
    let setup = Setup::new(&[("d", 300, ""), ("e", 300, "")]);
    let server = setup.server();
    let client = Client::new(&server, None);
    let ids: Vec<String> = [client.submit("ledger-d").await, client.submit("ledger-e").await]
        .into_iter()
        .map(|(_, run)| run["id"].as_str().unwrap().to_string())
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let server = server.restart();
    let client = Client::new(&server, None);
    for id in &ids {
        let run = client.settled(id).await;
        assert_eq!(run["status"], "answered", "{run}");
        let events = client.events(id, None, None).await;
        let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "one gapless stream across the restart");
    }
    let mut ledger = setup.ledger();
    ledger.sort();
    assert_eq!(ledger, ["d-1", "d-2", "e-1", "e-2"], "each side effect once across the drain");
    let (status, metrics) = answer(client.request(reqwest::Method::GET, "/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.as_str().unwrap().contains("reagent_runs{status=\"answered\"} 2"), "{metrics}");
}

fn clients_python() -> String {
    std::env::var("REAGENT_CLIENTS_PYTHON").expect(
        "REAGENT_CLIENTS_PYTHON is unset: run the tests through scripts/test.sh, which installs the pinned clients",
    )
}

#[test]
fn the_official_openai_client_gets_the_agents_answer_streamed_and_not() {
    let setup = Setup::new(&[("o", 0, ""), ("v", 0, "    approval: always\n")]);
    let server = setup.server();
    let script = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
models = [m.id for m in client.models.list()]
raw = client.chat.completions.with_raw_response.create(model="ledger-o", messages=[{"role": "user", "content": "keep the ledger"}])
whole = raw.parse()
streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model="ledger-o", messages=[{"role": "user", "content": "keep the ledger"}], stream=True) if c.choices)
try:
    client.chat.completions.create(model="ledger-v", messages=[{"role": "user", "content": "x"}])
    refused = None
except openai.UnprocessableEntityError as e:
    refused = e.message
print(json.dumps({"models": models, "answer": whole.choices[0].message.content, "run": raw.headers.get("x-reagent-run-id"),
                  "streamed": streamed, "refused": refused}))
"#;
    let output = Command::new(clients_python()).args(["-c", script, &server.url]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["models"], json!(["ledger-o", "ledger-v"]));
    assert_eq!(seen["answer"], "o is done.");
    assert_eq!(seen["streamed"], "o is done.");
    assert!(seen["run"].as_str().unwrap().starts_with("run_"), "{seen}");
    assert!(seen["refused"].as_str().unwrap().contains("approval"), "{seen}");
}

#[test]
fn schemathesis_finds_no_5xx_and_no_response_that_breaks_the_openapi_document() {
    let setup = Setup::new(&[("s", 0, "")]);
    let server = setup.server();
    let output = Command::new(clients_python())
        .args(["-m", "schemathesis.cli", "run", &format!("{}/openapi.json", server.url)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "40", "--seed", "2026", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(setup.db.path()) // its cache of examples goes there, not into the checkout
        .output()
        .unwrap();
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
}

#[tokio::test]
async fn a_server_killed_during_an_sse_stream_loses_no_run_and_the_stream_resumes_after_the_restart() {
    let setup = Setup::new(&[("k", 250, "")]);
    // The server kills itself as it streams the fifth event.
    let server = Server::start_crashing_at(setup.agents.path(), &setup.db.path().join("runs.db"), Some("streaming@5"));
    let client = Client::new(&server, None);
    let (_, run) = client.submit("ledger-k").await;
    let id = run["id"].as_str().unwrap().to_string();
    let seen = client.events(&id, None, None).await;
    assert_eq!(seen.len(), 4, "the stream broke at its fifth event: {seen:?}");
    let last = seen.last().unwrap().0;
    let (agents, db) = server.crashed();

    let server = Server::start(&agents, &db);
    let client = Client::new(&server, None);
    // The kill may have caught the append between its start and its result: a person looks at
    // the ledger and says whether it happened.
    let mut run = client.settled(&id).await;
    while run["status"] == "in_doubt" {
        let call = &run["waiting"]["in_doubt"][0];
        let line = call["arguments"]["line"].as_str().unwrap().to_string();
        let decision = match setup.ledger().contains(&line) {
            true => json!({"call_id": call["id"], "verdict": "done", "result": {"appended": line}}),
            false => json!({"call_id": call["id"], "verdict": "retry"}),
        };
        let (status, _) = client.post(&format!("/v1/runs/{id}/approvals"), json!({"decisions": [decision]})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        run = client.settled(&id).await;
    }
    assert_eq!(run["status"], "answered", "{run}");
    let rest = client.events(&id, Some(last), None).await;
    let whole = client.events(&id, None, None).await;
    assert_eq!(seen.into_iter().chain(rest).collect::<Vec<_>>(), whole, "exactly the events missed, in order");
    assert_eq!(setup.ledger(), ["k-1", "k-2"], "each side effect once");
}
