//! `http_fetch` against a real HTTP server on loopback, granted explicitly by IP and port.

mod common;

use std::collections::HashMap;

use common::http_server::{TestServer, route};
use common::repo_root;
use reagent_sandbox::{ErrorKind, Grants, HostGrant, Limits, Sandbox, ToolComponent};
use serde_json::{Value, json};

async fn http_fetch(grants: Grants) -> ToolComponent {
    let path = repo_root().join("tools/dist/http_fetch.wasm");
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
    Sandbox::with_cache(None).unwrap().load(&path, grants, Limits::default()).await.unwrap()
}

async fn fetch(tool: &ToolComponent, arguments: Value) -> Result<Value, reagent_sandbox::ToolError> {
    tool.call("http_fetch", &arguments.to_string(), "test-key").await.result
}

#[tokio::test]
async fn fetches_json_text_and_posts_within_its_grant() {
    let server = TestServer::start(HashMap::from([
        ("/data.json".to_string(), route(200, &[("content-type", "application/json")], r#"{"answer": 42}"#)),
        ("/page".to_string(), route(200, &[("content-type", "text/plain")], "plain words")),
        ("/moved".to_string(), route(301, &[("location", "/page")], "")),
        ("/submit".to_string(), route(201, &[("content-type", "application/json")], r#"{"ok": true}"#)),
        ("/large".to_string(), route(200, &[("content-type", "text/plain")], &"z".repeat(10_000))),
    ]))
    .await;
    let grant = HostGrant::parse(&format!("http://{}", server.address)).unwrap();
    let tool = http_fetch(Grants { http: vec![grant], ..Grants::default() }).await;

    let json = fetch(&tool, json!({"url": server.url("/data.json")})).await.unwrap();
    assert_eq!((json["status"].clone(), json["body"].clone()), (json!(200), json!({"answer": 42})));

    let moved = fetch(&tool, json!({"url": server.url("/moved")})).await.unwrap();
    assert_eq!(moved["body"], "plain words");
    assert_eq!(moved["url"], server.url("/page"), "the redirect was followed");

    let posted = fetch(&tool, json!({"url": server.url("/submit"), "method": "POST", "body": {"x": 1}})).await.unwrap();
    assert_eq!(posted["status"], 201);

    let cut = fetch(&tool, json!({"url": server.url("/large"), "max_bytes": 100})).await.unwrap();
    assert_eq!((cut["body"].as_str().unwrap().len(), cut["truncated"].clone()), (100, json!(true)));

    let requests = server.requests.lock().unwrap().clone();
    assert!(requests.contains(&"POST /submit HTTP/1.1".to_string()), "{requests:?}");
}

#[tokio::test]
async fn refuses_what_is_not_granted_and_bad_arguments() {
    let server = TestServer::start(HashMap::from([("/page".to_string(), route(200, &[], "x"))])).await;
    let tool = http_fetch(Grants::default()).await;
    let error = fetch(&tool, json!({"url": server.url("/page")})).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Denied, "{error:?}");
    assert!(server.requests.lock().unwrap().is_empty());

    let error = fetch(&tool, json!({"url": "ftp://example.com/"})).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidArguments);
    let error = fetch(&tool, json!({"url": server.url("/page"), "body": "x"})).await.unwrap_err();
    assert!(error.message.contains("GET request has no body"), "{error:?}");
}
