//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, pinned in
//! scripts/mcp-setup.sh) in server mode against `reagent mcp serve --http`, and in client mode
//! against reagent's `mcp:` tool entry, for both protocol versions. Expected failures are listed,
//! each with why, in tests/fixtures/mcp/conformance/VERSION.yml; one that starts passing fails too.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::listening::{Listening, free_port};
use common::repo_root;

const VERSIONS: [&str; 2] = ["2025-11-25", "2026-07-28"];

fn conformance() -> Command {
    let dir = std::env::var("REAGENT_MCP_NODE").expect(
        "REAGENT_MCP_NODE is unset: run the tests through scripts/test.sh, which installs the conformance suite",
    );
    Command::new(PathBuf::from(dir).join("conformance"))
}

fn expected_failures(version: &str) -> PathBuf {
    repo_root().join(format!("tests/fixtures/mcp/conformance/{version}.yml"))
}

/// Runs the suite and fails with its report unless every failure was expected.
fn passes(mut suite: Command, what: &str) {
    let output = suite.output().expect("run the conformance suite");
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let tail: String =
        report.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(output.status.success(), "{what}: unexpected failures\n{tail}");
    assert!(report.contains("all failures are expected"), "{what}: no baseline verdict\n{tail}");
}

#[test]
fn reagents_server_passes_the_conformance_suite_at_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    let yaml = format!(
        "name: served\ndescription: A calculator.\nmodel:\n  backend: replay\n  script: script.yaml\ntools:\n  - component: {0}/tools/dist/calc.wasm\n  - component: {0}/tools/dist/json_query.wasm\n",
        root.display()
    );
    std::fs::write(dir.path().join("agent.yaml"), yaml).unwrap();
    std::fs::write(dir.path().join("script.yaml"), r#"{"turns": ["done"]}"#).unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_reagent"));
    command
        .args(["mcp", "serve", "--agent-tool", "--http", &format!("127.0.0.1:{port}")])
        .arg(dir.path().join("agent.yaml"));
    let _served = Listening::start(&mut command, "serving MCP on");
    for version in VERSIONS {
        let mut suite = conformance();
        suite
            .args(["server", "--url", &format!("http://127.0.0.1:{port}/mcp"), "--requirements", version])
            .arg("--expected-failures")
            .arg(expected_failures(version));
        passes(suite, &format!("server mode at {version}"));
    }
}

#[test]
fn reagents_client_passes_the_conformance_suite_at_both_versions() {
    let wrapper = repo_root().join("tests/fixtures/mcp/conformance_client.sh");
    let command = format!("{} {}", wrapper.display(), env!("CARGO_BIN_EXE_reagent"));
    for version in VERSIONS {
        let mut suite = conformance();
        suite
            .args(["client", "--command", &command, "--requirements", version])
            .arg("--expected-failures")
            .arg(expected_failures(version));
        passes(suite, &format!("client mode at {version}"));
    }
}
