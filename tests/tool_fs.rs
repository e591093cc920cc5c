//! `fs` inside granted directories: /data read-only, /out read-write.

mod common;

use common::repo_root;
use reagent_sandbox::{DirGrant, ErrorKind, Grants, Limits, Sandbox, ToolComponent};
use serde_json::{Value, json};

async fn fs_tool(data: &std::path::Path, out: &std::path::Path) -> ToolComponent {
    let path = repo_root().join("tools/dist/fs.wasm");
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
    let grants = Grants {
        dirs: vec![DirGrant::read_only(data, "/data"), DirGrant::read_write(out, "/out")],
        ..Grants::default()
    };
    Sandbox::with_cache(None).unwrap().load(&path, grants, Limits::default()).await.unwrap()
}

async fn call(tool: &ToolComponent, name: &str, arguments: Value) -> Result<Value, reagent_sandbox::ToolError> {
    tool.call(name, &arguments.to_string(), "test-key").await.result
}

#[tokio::test]
async fn reads_lists_finds_greps_and_writes_only_where_granted() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("logs")).unwrap();
    std::fs::write(data.path().join("notes.txt"), "alpha\nbeta error\ngamma").unwrap();
    std::fs::write(data.path().join("logs/app.log"), "ok\nerror: disk full\n").unwrap();
    let tool = fs_tool(data.path(), out.path()).await;

    let read = call(&tool, "fs_read", json!({"path": "/data/notes.txt", "max_bytes": 5})).await.unwrap();
    assert_eq!(read, json!({"text": "alpha", "truncated": true}));
    let listed = call(&tool, "fs_list", json!({"path": "/data"})).await.unwrap();
    assert_eq!(
        listed,
        json!([{"name": "logs", "kind": "dir", "size": null}, {"name": "notes.txt", "kind": "file", "size": 22}])
    );
    let found = call(&tool, "fs_find", json!({"path": "/data", "name_contains": ".log"})).await.unwrap();
    assert_eq!(found, json!(["/data/logs/app.log"]));
    let grep = call(&tool, "fs_grep", json!({"path": "/data", "pattern": "^(beta )?error"})).await.unwrap();
    assert_eq!(
        grep,
        json!([
            {"path": "/data/logs/app.log", "line": 2, "text": "error: disk full"},
            {"path": "/data/notes.txt", "line": 2, "text": "beta error"}
        ])
    );

    assert_eq!(
        call(&tool, "fs_write", json!({"path": "/out/r.txt", "content": "done"})).await.unwrap(),
        json!({"bytes": 4})
    );
    call(&tool, "fs_write", json!({"path": "/out/r.txt", "content": "!", "append": true})).await.unwrap();
    assert_eq!(std::fs::read_to_string(out.path().join("r.txt")).unwrap(), "done!");

    let refused = call(&tool, "fs_write", json!({"path": "/data/notes.txt", "content": "x"})).await.unwrap_err();
    assert!(refused.message.starts_with("/data/notes.txt: "), "{refused:?}");
    assert_eq!(std::fs::read_to_string(data.path().join("notes.txt")).unwrap(), "alpha\nbeta error\ngamma");
    let outside = call(&tool, "fs_read", json!({"path": "/etc/passwd"})).await.unwrap_err();
    assert!(matches!(outside.kind, ErrorKind::NotFound | ErrorKind::Denied), "{outside:?}");
    let bad = call(&tool, "fs_grep", json!({"path": "/data", "pattern": "("})).await.unwrap_err();
    assert_eq!(bad.kind, ErrorKind::InvalidArguments);
}

#[tokio::test]
async fn errors_name_the_tool_to_call_instead() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("notes.txt"), "alpha").unwrap();
    let tool = fs_tool(data.path(), out.path()).await;
    let next_step = |error: reagent_sandbox::ToolError| error.message;

    let listed_a_file = next_step(call(&tool, "fs_list", json!({"path": "/data/notes.txt"})).await.unwrap_err());
    assert!(listed_a_file.ends_with("it is a file: read it with fs_read"), "{listed_a_file}");
    let read_a_folder = next_step(call(&tool, "fs_read", json!({"path": "/data"})).await.unwrap_err());
    assert!(read_a_folder.contains("it is a folder: list it with fs_list"), "{read_a_folder}");
    let missing = next_step(call(&tool, "fs_read", json!({"path": "/data/nope.txt"})).await.unwrap_err());
    assert!(missing.contains("list its folder with fs_list"), "{missing}");
    let read_only =
        next_step(call(&tool, "fs_write", json!({"path": "/data/new.txt", "content": "x"})).await.unwrap_err());
    assert!(read_only.contains("only folders granted read-write (`mode: rw`) can be written"), "{read_only}");
}
