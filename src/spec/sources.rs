//! Where an agent's files are read from. A run keeps the text of every file its agent was read
//! from (its YAML, its sub-agents', its replay script: never a secrets file) as a `Snapshot`,
//! so that it is resumed under the agent it started with, not under a file edited since.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The files an agent was read from, by path, with their text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub files: BTreeMap<PathBuf, String>,
}

impl Snapshot {
    /// The files whose text on disk is no longer the snapshot's (edited, moved or deleted).
    pub fn changed_on_disk(&self) -> Vec<PathBuf> {
        let differs = |(path, text): &(&PathBuf, &String)| std::fs::read_to_string(path).ok().as_ref() != Some(*text);
        self.files.iter().filter(differs).map(|(path, _)| path.clone()).collect()
    }
}

/// Reads files from disk, or from a snapshot when one is pinned, and keeps what it read.
#[derive(Debug, Default)]
pub struct Sources {
    pinned: Option<Snapshot>,
    read: Mutex<Snapshot>,
}

impl Sources {
    /// Files as they are on disk now.
    pub fn disk() -> Self {
        Sources::default()
    }

    /// Files as `snapshot` has them; a file it lacks is read from disk.
    pub fn pinned(snapshot: Snapshot) -> Self {
        Sources { pinned: Some(snapshot), read: Mutex::default() }
    }

    pub fn is_file(&self, path: &Path) -> bool {
        self.pinned.as_ref().is_some_and(|s| s.files.contains_key(path)) || path.is_file()
    }

    pub fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let bytes = match self.pinned.as_ref().and_then(|s| s.files.get(path)) {
            Some(text) => text.clone().into_bytes(),
            None => std::fs::read(path)?,
        };
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let mut read = self.read.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            read.files.insert(path.to_path_buf(), text.to_string());
        }
        Ok(bytes)
    }

    /// Every file read so far.
    pub fn snapshot(&self) -> Snapshot {
        self.read.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}
