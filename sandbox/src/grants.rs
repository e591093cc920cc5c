//! What a tool may reach. Everything starts denied; an agent grants each tool only what it needs.

use std::path::PathBuf;
use std::sync::Arc;

use crate::network::HostGrant;

#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Host directories the tool sees, each at a guest path.
    pub dirs: Vec<DirGrant>,
    /// Destinations for outgoing HTTP(S).
    pub http: Vec<HostGrant>,
    /// Environment variables the tool sees, with their values; nothing is inherited.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

/// Grants as a call uses them: shared, never changed after load.
#[derive(Debug, Clone)]
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
