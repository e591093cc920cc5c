//! Every tool shipped in tools/ loads in the sandbox, describes itself, and answers a call.
//! (`calc`, `fs` and `http_fetch` have tests of their own; each tool crate has unit tests.)

mod common;

use common::repo_root;
use reagent_sandbox::{Grants, Limits, Sandbox};
use serde_json::{Value, json};

async fn call(component: &str, tool: &str, arguments: Value) -> Value {
    let path = repo_root().join(format!("tools/dist/{component}.wasm"));
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
    let loaded = Sandbox::with_cache(None).unwrap().load(&path, Grants::default(), Limits::default()).await.unwrap();
    assert!(loaded.tools().iter().any(|t| t.name == tool), "{component} describes {tool}");
    loaded.call(tool, &arguments.to_string(), "test-key").await.result.unwrap_or_else(|e| panic!("{tool}: {e:?}"))
}

#[tokio::test]
async fn text_json_query_and_clock_answer_in_the_sandbox() {
    let count = call("text", "text_count", json!({"text": "two words"})).await;
    assert_eq!(count["words"], 2);
    let diff = call("text", "text_diff", json!({"before": "a\n", "after": "b\n"})).await;
    assert_eq!((diff["added"].clone(), diff["removed"].clone()), (json!(1), json!(1)));
    let prices =
        call("json_query", "json_query", json!({"document": {"items": [{"p": 1}, {"p": 2}]}, "path": "$.items[*].p"}))
            .await;
    assert_eq!(prices, json!([1, 2]));
    let added = call("clock", "clock_add", json!({"datetime": "2024-02-28", "span": "1 day"})).await;
    assert_eq!(added["date"], "2024-02-29");
    // The guest reads the host's wall clock (wasi:clocks): within a minute of the host's.
    let now = call("clock", "clock_now", json!({"time_zone": "Asia/Seoul"})).await;
    let host = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now["unix_seconds"].as_i64().unwrap() - host).abs() < 60, "{now}");
}
