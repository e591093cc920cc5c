//! What a tool may reach. Everything starts denied; an agent grants each tool only what it needs.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::disk::CountedGrant;
use crate::network::HostGrant;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Host directories the tool sees, each at a guest path.
    pub dirs: Vec<DirGrant>,
    /// Destinations for outgoing HTTP(S).
    pub http: Vec<HostGrant>,
    /// Environment variables the tool sees, with their values; nothing is inherited.
    pub env: Vec<(String, String)>,
}

/// Environment values may be secrets: debug output shows their names only.
impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Grants").field("dirs", &self.dirs).field("http", &self.http).field("env", &env).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
    /// Bytes all calls together may write under a read-write grant over the component's life
    /// (one run).
    pub max_write: u64,
    /// Files, folders and links all calls together may create under it over that time.
    pub max_files: u64,
}

impl DirGrant {
    /// Bytes a read-write grant may take over a run unless the agent file says otherwise.
    pub const DEFAULT_MAX_WRITE: u64 = 256 << 20;
    /// Entries a read-write grant may gain over a run unless the agent file says otherwise.
    pub const DEFAULT_MAX_FILES: u64 = 10_000;

    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        DirGrant {
            host: host.into(),
            guest: guest.into(),
            writable: false,
            max_write: Self::DEFAULT_MAX_WRITE,
            max_files: Self::DEFAULT_MAX_FILES,
        }
    }

    pub fn read_write(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        DirGrant { writable: true, ..Self::read_only(host, guest) }
    }
}

/// Grants as a call uses them: shared, never changed after load; the directory grants carry
/// what has been written under them so far.
#[derive(Clone)]
pub(crate) struct CallGrants {
    pub(crate) dirs: Arc<[CountedGrant]>,
    pub(crate) http: Arc<[HostGrant]>,
    pub(crate) env: Arc<[(String, String)]>,
}

impl From<Grants> for CallGrants {
    fn from(grants: Grants) -> Self {
        let dirs = grants.dirs.into_iter().map(CountedGrant::from).collect();
        CallGrants { dirs, http: grants.http.into(), env: grants.env.into() }
    }
}
