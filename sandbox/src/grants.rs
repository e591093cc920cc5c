//! What a tool may reach. Everything starts denied; an agent grants each tool only what it needs.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

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
}

/// Grants as a call uses them: shared, never changed after load.
#[derive(Clone)]
pub(crate) struct CallGrants {
    pub(crate) dirs: Arc<[DirGrant]>,
    pub(crate) http: Arc<[HostGrant]>,
    pub(crate) env: Arc<[(String, String)]>,
}

impl From<Grants> for CallGrants {
    fn from(grants: Grants) -> Self {
        CallGrants { dirs: grants.dirs.into(), http: grants.http.into(), env: grants.env.into() }
    }
}
