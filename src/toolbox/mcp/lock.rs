//! The lock file beside an agent (`AGENT.mcp-lock.json`): each MCP server's tool definitions as
//! first seen, and the protocol era it spoke. A definition that differs later, or a tool that was
//! not there, fails closed until a person re-pins (`reagent mcp pin AGENT.yaml`): a server cannot
//! change what a tool says it does after the agent's author looked at it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

const VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Lock {
    version: u32,
    #[serde(default)]
    pub servers: BTreeMap<String, PinnedServer>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PinnedServer {
    /// The protocol version it answered with: whether to begin with `server/discover` or
    /// `initialize` next time, without probing.
    pub protocol: String,
    /// Each tool's definition as the server gave it (name, description, schemas, annotations).
    pub tools: BTreeMap<String, Value>,
}

/// Where an agent's lock file is: `agent.yaml` → `agent.mcp-lock.json`, beside it.
pub fn path_for(agent_file: &Path) -> PathBuf {
    let stem = agent_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    agent_file.with_file_name(format!("{stem}.mcp-lock.json"))
}

impl Lock {
    /// Reads the lock file; none yet is an empty lock.
    pub fn read(path: &Path) -> Result<Lock, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Lock { version: VERSION, ..Lock::default() });
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let lock: Lock = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}:{}:{}: {e}; delete the file and run `reagent mcp pin` to pin again",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        if lock.version != VERSION {
            return Err(format!(
                "{}: lock file version {} is not {VERSION}, the one this reagent writes; run `reagent mcp pin` to pin again",
                path.display(),
                lock.version
            ));
        }
        Ok(lock)
    }

    /// Writes the lock file whole (a temporary file renamed over it, so that a concurrent reader
    /// sees the old or the new one, never half).
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&Lock { version: VERSION, servers: self.servers.clone() })
            .expect("a lock serialises");
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
        std::io::Write::write_all(&mut file, format!("{text}\n").as_bytes()).map_err(failed)?;
        file.persist(path).map_err(|e| failed(e.error))?;
        Ok(())
    }
}

/// How the tools a server offers now differ from those pinned: tools whose definition changed and
/// tools that are new, by name.
#[derive(Debug, Default)]
pub struct Drift {
    pub changed: Vec<(String, Vec<&'static str>)>,
    pub new: Vec<String>,
}

impl Drift {
    pub fn between(pinned: &PinnedServer, offered: &BTreeMap<String, Value>) -> Drift {
        let mut drift = Drift::default();
        for (name, definition) in offered {
            match pinned.tools.get(name) {
                None => drift.new.push(name.clone()),
                Some(old) if old != definition => drift.changed.push((name.clone(), differing_fields(old, definition))),
                Some(_) => {}
            }
        }
        drift
    }

    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.new.is_empty()
    }
}

fn differing_fields(old: &Value, new: &Value) -> Vec<&'static str> {
    ["description", "inputSchema", "outputSchema", "annotations", "title"]
        .into_iter()
        .filter(|field| old.get(field) != new.get(field))
        .collect()
}
