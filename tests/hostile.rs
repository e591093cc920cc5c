//! The hostile-tools suite: a component written to attack the sandbox (tests/components/hostile)
//! tries every escape. Each attack must end in its structured error, with the runtime alive and
//! a normal call succeeding right after.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::http_server::{TestServer, route};
use common::test_component;
use reagent_sandbox::{CallOutput, DirGrant, ErrorKind, Grants, HostGrant, Limits, Sandbox, ToolComponent};
use serde_json::{Value, json};

async fn hostile(grants: Grants, limits: Limits) -> ToolComponent {
    let sandbox = Sandbox::with_cache(None).expect("sandbox");
    sandbox.load(&test_component("hostile"), grants, limits).await.expect("load the hostile component")
}

async fn call(component: &ToolComponent, tool: &str, arguments: Value) -> CallOutput {
    component.call(tool, &arguments.to_string(), "test-key").await
}

/// Asserts the call failed with `kind` and returns the message.
fn failed_with(output: &CallOutput, kind: ErrorKind) -> String {
    match &output.result {
        Err(error) => {
            assert_eq!(error.kind, kind, "{error:?}");
            error.message.clone()
        }
        Ok(value) => panic!("expected a {kind:?} error, got {value}"),
    }
}

async fn still_works(component: &ToolComponent) {
    assert_eq!(call(component, "ok", json!({})).await.result, Ok(json!("fine")), "a normal call after the attack");
}

fn read_only(host: &std::path::Path) -> Grants {
    Grants { dirs: vec![DirGrant::read_only(host, "/data")], ..Grants::default() }
}

#[tokio::test]
async fn traversal_and_symlinks_cannot_leave_a_granted_directory() {
    let dir = tempfile::tempdir().unwrap();
    let granted = dir.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "TOP SECRET").unwrap();
    std::fs::write(granted.join("inside.txt"), "inside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), granted.join("link")).unwrap();
    std::os::unix::fs::symlink(dir.path(), granted.join("parent")).unwrap();
    let tool = hostile(read_only(&granted), Limits::default()).await;

    assert_eq!(call(&tool, "read", json!({"path": "/data/inside.txt"})).await.result, Ok(json!("inside")));
    for path in ["/data/../secret.txt", "/data/link", "/data/parent/secret.txt", "/etc/passwd", "secret.txt"] {
        let output = call(&tool, "read", json!({"path": path})).await;
        let error = output.result.expect_err(path);
        assert!(matches!(error.kind, ErrorKind::Denied | ErrorKind::NotFound), "{path}: {error:?}");
        assert!(!error.message.contains("TOP SECRET"));
    }
    still_works(&tool).await;
}

#[tokio::test]
async fn a_read_only_grant_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let tool = hostile(read_only(dir.path()), Limits::default()).await;
    let output = call(&tool, "write", json!({"path": "/data/new.txt", "content": "x"})).await;
    assert!(output.result.is_err(), "{output:?}");
    assert!(!dir.path().join("new.txt").exists());
    still_works(&tool).await;

    // The same call under a read-write grant succeeds: the refusal above was the grant's doing.
    let writable = Grants { dirs: vec![DirGrant::read_write(dir.path(), "/data")], ..Grants::default() };
    let tool = hostile(writable, Limits::default()).await;
    assert_eq!(
        call(&tool, "write", json!({"path": "/data/new.txt", "content": "x"})).await.result,
        Ok(json!("written"))
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("new.txt")).unwrap(), "x");
}

#[tokio::test]
async fn http_reaches_only_granted_hosts_by_resolved_address_on_every_hop() {
    let server = TestServer::start(HashMap::from([
        ("/hello".to_string(), route(200, &[], "hello")),
        ("/to-private".to_string(), route(302, &[("location", "http://10.255.255.1/x")], "")),
        ("/to-metadata".to_string(), route(302, &[("location", "http://169.254.169.254/latest/meta-data/")], "")),
    ]))
    .await;
    let port = server.address.port();
    // Loopback is reachable only because this grant names 127.0.0.1 explicitly.
    let grants =
        Grants { http: vec![HostGrant::parse(&format!("http://127.0.0.1:{port}")).unwrap()], ..Grants::default() };
    let tool = hostile(grants, Limits::default()).await;

    let hello = call(&tool, "get", json!({"url": server.url("/hello")})).await;
    assert_eq!(hello.result, Ok(json!({"status": 200, "body": "hello"})));

    let attacks = [
        ("http://example.com/".to_string(), "not allowed"),
        (format!("http://127.0.0.1:{}/", port + 1), "not allowed"),
        ("http://169.254.169.254/latest/meta-data/".to_string(), "not allowed"),
        (server.url("/to-private"), "10.255.255.1:80 is not allowed"),
        (server.url("/to-metadata"), "169.254.169.254:80 is not allowed"),
    ];
    for (url, expected) in attacks {
        let message = failed_with(&call(&tool, "get", json!({"url": url})).await, ErrorKind::Denied);
        assert!(message.contains(expected), "{url}: {message}");
        still_works(&tool).await;
    }
    // The redirects were followed by the guest, and refused before any connection was made.
    let seen = server.requests.lock().unwrap().clone();
    assert_eq!(seen, vec!["GET /hello HTTP/1.1", "GET /to-private HTTP/1.1", "GET /to-metadata HTTP/1.1"]);
}

#[tokio::test]
async fn a_granted_hostname_that_resolves_to_loopback_is_refused() {
    let server = TestServer::start(HashMap::from([("/hello".to_string(), route(200, &[], "hello"))])).await;
    let port = server.address.port();
    let grants = Grants { http: vec![HostGrant::parse(&format!("localhost:{port}")).unwrap()], ..Grants::default() };
    let tool = hostile(grants, Limits::default()).await;
    let output = call(&tool, "get", json!({"url": format!("http://localhost:{port}/hello")})).await;
    let message = failed_with(&output, ErrorKind::Denied);
    assert!(message.contains("a loopback address"), "{message}");
    assert!(server.requests.lock().unwrap().is_empty(), "no connection was made");
    still_works(&tool).await;
}

#[tokio::test]
async fn without_grants_there_is_no_network_at_all() {
    let server = TestServer::start(HashMap::from([("/hello".to_string(), route(200, &[], "hello"))])).await;
    let tool = hostile(Grants::default(), Limits::default()).await;
    let message = failed_with(&call(&tool, "get", json!({"url": server.url("/hello")})).await, ErrorKind::Denied);
    assert!(message.contains("no network grant"), "{message}");
    // Raw sockets: refused by the WASI context, whatever the address.
    let output = call(&tool, "connect", json!({"address": server.address.to_string()})).await;
    assert!(output.result.is_err(), "{output:?}");
    assert!(server.requests.lock().unwrap().is_empty());
    still_works(&tool).await;
}

#[tokio::test]
async fn environment_variables_are_not_inherited() {
    let grants = Grants { env: vec![("GRANTED".into(), "yes".into())], ..Grants::default() };
    let tool = hostile(grants, Limits::default()).await;
    assert_eq!(call(&tool, "env", json!({"name": "GRANTED"})).await.result, Ok(json!("yes")));
    assert!(std::env::var("PATH").is_ok(), "the host has PATH");
    for name in ["PATH", "HOME", "CARGO"] {
        failed_with(&call(&tool, "env", json!({"name": name})).await, ErrorKind::NotFound);
    }
    still_works(&tool).await;
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_limit() {
    let tool = hostile(Grants::default(), Limits { memory_bytes: 32 << 20, ..Limits::default() }).await;
    let message = failed_with(&call(&tool, "alloc", json!({"mb": 512})).await, ErrorKind::Memory);
    assert!(message.contains("32 MiB"), "{message}");
    assert_eq!(call(&tool, "alloc", json!({"mb": 8})).await.result, Ok(json!(2048)), "within the limit");
    still_works(&tool).await;
}

/// On a single-threaded runtime, so that a guest that never yielded would hold the only thread
/// until its CPU budget ran out, and the other calls could not run meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn an_infinite_loop_times_out_without_stalling_other_calls() {
    let limits = Limits { cpu_time: Duration::from_millis(1500), ..Limits::default() };
    let tool = std::sync::Arc::new(hostile(Grants::default(), limits).await);
    let spinning = {
        let tool = tool.clone();
        tokio::spawn(async move { call(&tool, "spin", json!({})).await })
    };
    tokio::task::yield_now().await; // the spinning call starts first
    // While the loop burns its CPU budget, other calls run: the spinning guest yields every tick.
    for _ in 0..3 {
        still_works(&tool).await;
    }
    assert!(!spinning.is_finished(), "the loop is still running while the normal calls completed");
    let output = spinning.await.unwrap();
    assert!(failed_with(&output, ErrorKind::Timeout).contains("CPU limit"));
    still_works(&tool).await;
}

#[tokio::test]
async fn a_call_stuck_in_a_host_call_hits_the_wall_clock_limit() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let grants = Grants { http: vec![HostGrant::parse(&format!("http://{address}")).unwrap()], ..Grants::default() };
    let tool = hostile(grants, Limits { wall_time: Duration::from_millis(500), ..Limits::default() }).await;
    let output = call(&tool, "get", json!({"url": format!("http://{address}/")})).await;
    assert!(failed_with(&output, ErrorKind::Timeout).contains("wall-clock limit"));
    still_works(&tool).await;
}

#[tokio::test]
async fn a_stdout_flood_and_an_oversized_result_are_refused() {
    let limits = Limits { log_bytes: 64 << 10, result_bytes: 1 << 20, ..Limits::default() };
    let tool = hostile(Grants::default(), limits).await;
    let flood = call(&tool, "flood", json!({"mb": 50})).await;
    assert!(failed_with(&flood, ErrorKind::OutputTooLarge).contains("stdout or stderr"));
    assert!(flood.log.len() <= 2 * (64 << 10), "stdout and stderr are capped: {} bytes", flood.log.len());
    still_works(&tool).await;

    let big = call(&tool, "big", json!({"mb": 4})).await;
    assert!(failed_with(&big, ErrorKind::OutputTooLarge).contains("over the limit"));
    still_works(&tool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_state_survives_from_one_call_to_the_next() {
    let tool = std::sync::Arc::new(hostile(Grants::default(), Limits::default()).await);
    for _ in 0..50 {
        assert_eq!(call(&tool, "count", json!({})).await.result, Ok(json!(1)), "every call starts fresh");
    }
    let concurrent: Vec<_> = (0..32)
        .map(|_| {
            let tool = tool.clone();
            tokio::spawn(async move { call(&tool, "count", json!({})).await.result })
        })
        .collect();
    for call in concurrent {
        assert_eq!(call.await.unwrap(), Ok(json!(1)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_calls_than_instance_slots_wait_their_turn() {
    // 300 guests that each spin through a 10 ms CPU budget, all started at once: more than the
    // sandbox's 256 instance slots. The calls beyond them wait for a slot instead of failing.
    let limits = Limits { cpu_time: Duration::from_millis(10), ..Limits::default() };
    let tool = std::sync::Arc::new(hostile(Grants::default(), limits).await);
    let calls: Vec<_> = (0..300)
        .map(|_| {
            let tool = tool.clone();
            tokio::spawn(async move { call(&tool, "spin", json!({})).await })
        })
        .collect();
    for call in calls {
        let output = call.await.unwrap();
        assert!(failed_with(&output, ErrorKind::Timeout).contains("CPU limit"));
    }
    still_works(&tool).await;
}

/// Runs `attack` (many hostile calls at once) while calls of an honest component in the same
/// process open a file and fetch over loopback HTTP; each honest call must succeed.
async fn honest_calls_succeed_during<F: std::future::Future + Send + 'static>(sandbox: &Sandbox, attack: F) -> F::Output
where
    F::Output: Send,
{
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("note.txt"), "still readable").unwrap();
    let server = TestServer::start(HashMap::from([("/hello".to_string(), route(200, &[], "hello"))])).await;
    let grants = Grants {
        dirs: vec![DirGrant::read_only(files.path(), "/data")],
        http: vec![HostGrant::parse(&format!("http://127.0.0.1:{}", server.address.port())).unwrap()],
        ..Grants::default()
    };
    let honest = sandbox.load(&test_component("hostile"), grants, Limits::default()).await.expect("load");
    let attack = tokio::spawn(attack);
    for _ in 0..5 {
        let (read, fetch) = tokio::join!(
            call(&honest, "read", json!({"path": "/data/note.txt"})),
            call(&honest, "get", json!({"url": server.url("/hello")})),
        );
        assert_eq!(read.result, Ok(json!("still readable")), "an honest file read during the attack");
        assert_eq!(fetch.result, Ok(json!({"status": 200, "body": "hello"})), "an honest fetch during the attack");
    }
    attack.await.expect("the attack task")
}

/// `count` concurrent calls of `tool` on one component, their outputs in order.
async fn many(
    tool: std::sync::Arc<ToolComponent>,
    name: &'static str,
    count: usize,
    arguments: Value,
) -> Vec<CallOutput> {
    let calls: Vec<_> = (0..count)
        .map(|i| {
            let (tool, mut arguments) = (tool.clone(), arguments.clone());
            if let Some(path) = arguments.get("path").and_then(Value::as_str).map(|p| p.replace("{i}", &i.to_string()))
            {
                arguments["path"] = json!(path);
            }
            tokio::spawn(async move { call(&tool, name, arguments).await })
        })
        .collect();
    let mut outputs = Vec::new();
    for call in calls {
        outputs.push(call.await.expect("a call task"));
    }
    outputs
}

/// Sizes as the sandbox's messages write them.
fn size(bytes: u64) -> String {
    match bytes {
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}

fn read_write(host: &std::path::Path) -> Grants {
    Grants { dirs: vec![DirGrant::read_write(host, "/data")], ..Grants::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filling_write_stops_at_the_write_limit_with_its_partial_writes_reported() {
    let sandbox = Sandbox::with_cache(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { write_bytes: 2 << 20, ..Limits::default() };
    let filler =
        std::sync::Arc::new(sandbox.load(&test_component("hostile"), read_write(dir.path()), limits).await.unwrap());
    // Eight fillers at once, each asking for 1 GiB.
    let outputs = honest_calls_succeed_during(
        &sandbox,
        many(filler.clone(), "fill", 8, json!({"path": "/data/fill-{i}.bin", "mb": 1024})),
    )
    .await;
    for (i, output) in outputs.iter().enumerate() {
        let message = failed_with(output, ErrorKind::WriteLimit);
        assert!(message.contains("more than 2 MiB in one call (limits.max_write)"), "{message}");
        let on_disk = std::fs::metadata(dir.path().join(format!("fill-{i}.bin"))).unwrap().len();
        assert!(on_disk <= 2 << 20 && on_disk > 1 << 20, "nothing past the limit reached the disk: {on_disk}");
        assert!(
            message.contains(&format!("it had written {} before it was stopped: /data/fill-{i}.bin (", size(on_disk))),
            "the partial write is reported: {message}"
        );
    }
    still_works(&filler).await;
}

#[tokio::test]
async fn a_grant_bounds_what_all_calls_of_a_run_write_under_it() {
    let sandbox = Sandbox::with_cache(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut grants = read_write(dir.path());
    grants.dirs[0].max_write = 3 << 20;
    let tool = sandbox.load(&test_component("hostile"), grants, Limits::default()).await.unwrap();
    for name in ["a", "b", "c"] {
        let output = call(&tool, "fill", json!({"path": format!("/data/{name}.bin"), "mb": 1})).await;
        assert_eq!(output.result, Ok(json!("filled")), "{name}: within the grant's 3 MiB");
    }
    let message =
        failed_with(&call(&tool, "fill", json!({"path": "/data/d.bin", "mb": 1})).await, ErrorKind::WriteLimit);
    assert!(message.contains("more than 3 MiB under /data over the run"), "{message}");
    // A fresh load (another run) starts from zero.
    let tool = sandbox.load(&test_component("hostile"), read_write(dir.path()), Limits::default()).await.unwrap();
    assert_eq!(call(&tool, "fill", json!({"path": "/data/d.bin", "mb": 1})).await.result, Ok(json!("filled")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_creation_flood_stops_at_the_file_limit() {
    let sandbox = Sandbox::with_cache(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4 {
        std::fs::create_dir(dir.path().join(format!("d{i}"))).unwrap();
    }
    let limits = Limits { files: 100, ..Limits::default() };
    let flooder =
        std::sync::Arc::new(sandbox.load(&test_component("hostile"), read_write(dir.path()), limits).await.unwrap());
    let outputs = honest_calls_succeed_during(
        &sandbox,
        many(flooder.clone(), "touch", 4, json!({"path": "/data/d{i}", "count": 1_000_000})),
    )
    .await;
    for (i, output) in outputs.iter().enumerate() {
        let message = failed_with(output, ErrorKind::FileLimit);
        assert!(message.contains("more than 100 files or folders in one call (limits.max_files)"), "{message}");
        assert!(message.contains(&format!("it had created 100: /data/d{i}/f0,")), "{message}");
        assert_eq!(std::fs::read_dir(dir.path().join(format!("d{i}"))).unwrap().count(), 100);
    }
    still_works(&flooder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_hoard_stops_at_the_handle_limit() {
    let sandbox = Sandbox::with_cache(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.txt"), "x").unwrap();
    let hoarder = std::sync::Arc::new(
        sandbox.load(&test_component("hostile"), read_only(dir.path()), Limits::default()).await.unwrap(),
    );
    // Unbounded, 64 calls each holding 100,000 descriptors would exhaust the process's limit.
    let outputs = honest_calls_succeed_during(
        &sandbox,
        many(hoarder.clone(), "hoard", 64, json!({"path": "/data/x.txt", "count": 100_000})),
    )
    .await;
    for output in &outputs {
        let message = failed_with(output, ErrorKind::HandleLimit);
        assert!(message.contains("more than 64 handles"), "{message}");
    }
    let few = call(&hoarder, "hoard", json!({"path": "/data/x.txt", "count": 20})).await;
    assert_eq!(few.result, Ok(json!(20)), "holding a few files is fine");
    still_works(&hoarder).await;
}
