//! Webhooks from a real `reagent serve` to a receiver on loopback: a run's final state arrives
//! signed (checked by `standardwebhooks`, the reference Python library), a 500 is retried under the
//! same id, a callback the server does not allow is refused before the run is recorded, and a
//! process killed between the run's commit and the send (or between a send and its record) loses
//! nothing: after the restart there is exactly one logical delivery, by id.

mod common;

use std::collections::{HashMap, VecDeque};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::server::{Client, Server, Setup};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The example secret of the Standard Webhooks specification.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got: its webhook headers and body.
#[derive(Debug, Clone)]
struct Delivery {
    headers: HashMap<String, String>,
    body: String,
}

/// A webhook receiver on loopback: answers the given statuses in turn, then 204.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Delivery>>>,
}

type Shared = Arc<(Mutex<VecDeque<u16>>, Arc<Mutex<Vec<Delivery>>>)>;

impl Receiver {
    async fn start(answers: &[u16]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let shared: Shared = Arc::new((Mutex::new(answers.iter().copied().collect()), got.clone()));
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(shared);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + limit;
        while self.deliveries().len() < count {
            assert!(Instant::now() < deadline, "{count} deliveries expected, got {:?}", self.deliveries());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.deliveries()
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: String) -> AxumStatus {
    let headers = ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type"]
        .into_iter()
        .filter_map(|name| Some((name.to_string(), headers.get(name)?.to_str().ok()?.to_string())))
        .collect();
    shared.1.lock().unwrap().push(Delivery { headers, body });
    let status = shared.0.lock().unwrap().pop_front().unwrap_or(204);
    AxumStatus::from_u16(status).unwrap()
}

/// A server allowed to call the receiver back (its IP named, as loopback needs).
fn server(setup: &Setup, receiver: &Receiver, crash_at: Option<&str>) -> Server {
    let allow = format!("127.0.0.1:{}", receiver.port);
    let db = setup.db.path().join("runs.db");
    Server::start_with(
        setup.agents.path(),
        db.to_str().unwrap(),
        &["--webhook-allow", &allow, "--webhook-secret", SECRET],
        crash_at,
    )
}

async fn submit_with_callback(client: &Client, url: &str) -> (StatusCode, Value) {
    client.post("/v1/runs", json!({"agent": "ledger-a", "task": "keep the ledger", "callback_url": url})).await
}

/// Each delivery's signature checked by the reference library, `standardwebhooks`.
fn verify_with_the_reference_library(deliveries: &[Delivery]) {
    let python = std::env::var("REAGENT_CLIENTS_PYTHON").expect(
        "REAGENT_CLIENTS_PYTHON: scripts/api-clients-setup.sh installs standardwebhooks (scripts/test.sh sets it)",
    );
    let script = "import json, sys\nfrom standardwebhooks.webhooks import Webhook\nhook = Webhook(sys.argv[1])\n\
                  for line in sys.stdin:\n    d = json.loads(line)\n    hook.verify(d['body'], d['headers'])\nprint('verified')";
    let input: String =
        deliveries.iter().map(|d| json!({"body": d.body, "headers": d.headers}).to_string() + "\n").collect();
    let mut child = Command::new(python)
        .args(["-c", script, SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success() && stdout(&output).contains("verified"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_end_is_delivered_signed_and_a_500_is_retried_under_the_same_id() {
    let setup = Setup::new(&[("a", 0, "")]);
    let receiver = Receiver::start(&[500]).await;
    let server = server(&setup, &receiver, None);
    let client = Client::new(&server, None);
    let (status, run) = submit_with_callback(&client, &receiver.url()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap();
    let deliveries = receiver.wait_for(2, Duration::from_secs(60)).await;
    let ids: Vec<&str> = deliveries.iter().map(|d| d.headers["webhook-id"].as_str()).collect();
    assert_eq!(ids, [format!("msg_{id}"), format!("msg_{id}")], "the retry after the 500 keeps the id");
    let body: Value = serde_json::from_str(&deliveries[1].body).unwrap();
    assert_eq!(body["type"], "run.finished");
    assert_eq!((body["data"]["run_id"].as_str(), body["data"]["status"].as_str()), (Some(id), Some("answered")));
    assert_eq!(body["data"]["outcome"]["answer"], "a is done.");
    assert_eq!(deliveries[1].headers["content-type"], "application/json");
    verify_with_the_reference_library(&deliveries);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.deliveries().len(), 2, "taken with a 2xx: never sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_the_server_does_not_allow_is_refused_before_the_run_is_recorded() {
    let setup = Setup::new(&[("a", 0, "")]);
    let receiver = Receiver::start(&[]).await;
    let server = server(&setup, &receiver, None);
    let client = Client::new(&server, None);
    for (url, why) in [
        ("http://169.254.169.254/latest/meta-data", "not allowed"),
        (&format!("http://localhost:{}/hook", receiver.port), "not allowed"),
        (&format!("http://127.0.0.1:{}/hook", receiver.port + 1), "not allowed"),
        ("not a url", "not a URL"),
    ] {
        let (status, error) = submit_with_callback(&client, url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("callback_url: ") && message.contains(why), "{url}: {message}");
    }
    let (_, runs) = client.get("/v1/runs").await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "nothing recorded: {runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_webhook_secret_refuses_callbacks() {
    let setup = Setup::new(&[("a", 0, "")]);
    let server = setup.server();
    let (status, error) = submit_with_callback(&Client::new(&server, None), "https://hooks.example/x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("REAGENT_WEBHOOK_SECRET"), "{error}");
}

/// A server killed at `point` after the run's end was committed; its successor delivers.
async fn killed_at(point: &str) -> (Receiver, Vec<Delivery>, String) {
    let setup = Setup::new(&[("a", 0, "")]);
    let receiver = Receiver::start(&[]).await;
    let crashing = server(&setup, &receiver, Some(point));
    let (status, run) = submit_with_callback(&Client::new(&crashing, None), &receiver.url()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    crashing.crashed();
    let restarted = server(&setup, &receiver, None);
    let (_, run) = Client::new(&restarted, None).get(&format!("/v1/runs/{id}")).await;
    assert_eq!(run["status"], "answered", "the run ended before the crash: {run}");
    // The outbox holds a delivery for a while for the process that took it, dead or not.
    let deliveries = receiver.wait_for(if point == "webhook_send" { 1 } else { 2 }, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    (receiver, deliveries, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_commit_and_the_send_loses_nothing_and_delivers_once() {
    let (receiver, deliveries, id) = killed_at("webhook_send").await;
    assert_eq!(receiver.deliveries().len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].headers["webhook-id"], format!("msg_{id}"));
    verify_with_the_reference_library(&deliveries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_send_repeats_it_under_the_same_id_one_logical_delivery() {
    let (receiver, deliveries, id) = killed_at("webhook_delivered").await;
    assert_eq!(receiver.deliveries().len(), 2, "sent, unrecorded, sent again: {deliveries:?}");
    let ids: Vec<&str> = deliveries.iter().map(|d| d.headers["webhook-id"].as_str()).collect();
    assert_eq!(ids, [format!("msg_{id}"), format!("msg_{id}")], "a receiver keeping ids sees one delivery");
    assert_eq!(deliveries[0].body, deliveries[1].body);
}
