//! `reagent serve` processes and their clients, for the API tests: a server on a free loopback
//! port (killed when dropped), a reqwest client with the API's calls, and a folder of ledger
//! agents.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::ledger::LedgerAgent;
use super::{repo_root, stderr, stdout};

/// A `reagent serve` process on a free loopback port, over its own store; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    db: String,
    agents: PathBuf,
    args: Vec<String>,
}

impl Server {
    pub fn start(agents: &Path, db: &Path) -> Self {
        Server::start_crashing_at(agents, db, None)
    }

    /// A server that kills itself (SIGKILL) at a crash point, `REAGENT_CRASH_AT=POINT[@N]`.
    pub fn start_crashing_at(agents: &Path, db: &Path, crash_at: Option<&str>) -> Self {
        Server::start_with(agents, db.to_str().unwrap(), &[], crash_at)
    }

    /// A server on the store at `db` (a path or URL), with more arguments for `serve`.
    pub fn start_with(agents: &Path, db: &str, args: &[&str], crash_at: Option<&str>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_reagent"));
        if let Some(point) = crash_at {
            command.env("REAGENT_CRASH_AT", point);
        }
        let child = command
            .args(["serve", "--agents", agents.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("REAGENT_DB", db)
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let args = args.iter().map(|a| a.to_string()).collect();
        let server =
            Server { child, url: format!("http://127.0.0.1:{port}"), db: db.into(), agents: agents.into(), args };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "reagent serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// SIGTERM, then waits for the drain; the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: sends SIGTERM to the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }

    /// SIGKILL, as a crash would.
    /// Waits for a server started at a crash point to have killed itself.
    pub fn crashed(mut self) -> (PathBuf, PathBuf) {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "the server killed itself: {status:?}");
        (self.agents.clone(), PathBuf::from(&self.db))
    }

    /// SIGTERM, then the same server again (on another port).
    pub fn restart(self) -> Self {
        let (agents, db, args) = (self.agents.clone(), self.db.clone(), self.args.clone());
        assert!(self.terminate().success());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_with(&agents, &db, &args, None)
    }

    pub fn key(&self, tenant: &str, scopes: &str, max_runs: u32) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_reagent"))
            .args(["keys", "create", "--tenant", tenant, "--scopes", scopes, "--max-runs", &max_runs.to_string()])
            .env("REAGENT_DB", &self.db)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output).trim().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Client {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
}

impl Client {
    pub fn new(server: &Server, key: Option<&str>) -> Self {
        Client { http: reqwest::Client::new(), url: server.url.clone(), key: key.map(str::to_string) }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        answer(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn submit(&self, agent: &str) -> (StatusCode, Value) {
        self.post("/v1/runs", json!({"agent": agent, "task": "keep the ledger"})).await
    }

    /// Waits until the run ends or waits for a person.
    pub async fn settled(&self, id: &str) -> Value {
        for _ in 0..20 {
            let (status, run) = self.get(&format!("/v1/runs/{id}?wait=5s")).await;
            assert_eq!(status, StatusCode::OK, "{run}");
            if !matches!(run["status"].as_str(), Some("queued" | "running")) {
                return run;
            }
        }
        panic!("run {id} never settled");
    }

    /// The SSE stream of a run's events from `last_seen` on, read to its end or until `stop_after`
    /// events.
    pub async fn events(&self, id: &str, last_seen: Option<u64>, stop_after: Option<usize>) -> Vec<(u64, Value)> {
        let mut request = self.request(reqwest::Method::GET, &format!("/v1/runs/{id}/events"));
        if let Some(seq) = last_seen {
            request = request.header("Last-Event-ID", seq.to_string());
        }
        let mut response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let (mut text, mut events) = (String::new(), Vec::new());
        // Until the stream ends, or its connection drops.
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_string);
                if let (Some(id), Some(data)) = (field("id: "), field("data: ")) {
                    events.push((id.parse().unwrap(), serde_json::from_str(&data).unwrap()));
                }
                if stop_after.is_some_and(|n| events.len() >= n) {
                    return events; // the connection is dropped here
                }
            }
        }
        events
    }
}

pub async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// A folder of ledger agents tagged `tags`, a ledger, and a store.
pub struct Setup {
    pub agents: tempfile::TempDir,
    pub ledger: tempfile::TempDir,
    pub db: tempfile::TempDir,
    _kept: Vec<LedgerAgent>,
}

impl Setup {
    pub fn new(agents: &[(&str, u64, &str)]) -> Self {
        let (dir, ledger, db) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let kept = agents
            .iter()
            .map(|(tag, wait_ms, extra)| {
                let agent = LedgerAgent::with(ledger.path(), tag, *wait_ms, extra);
                agent.offer_in(dir.path());
                agent
            })
            .collect();
        Setup { agents: dir, ledger, db, _kept: kept }
    }

    pub fn server(&self) -> Server {
        Server::start(self.agents.path(), &self.db.path().join("runs.db"))
    }

    pub fn ledger(&self) -> Vec<String> {
        std::fs::read_to_string(self.ledger.path().join("ledger.txt"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}
