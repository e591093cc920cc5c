//! API keys: a tenant, scopes and a limit of concurrent runs. The secret is shown once, when the
//! key is created; the store keeps its SHA-256 only (a secret of 256 random bits needs no slow
//! hash).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "runs:read")]
    Read,
    #[serde(rename = "runs:write")]
    Write,
    #[serde(rename = "runs:approve")]
    Approve,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Approve];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "runs:read",
            Scope::Write => "runs:write",
            Scope::Approve => "runs:approve",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub tenant: String,
    pub scopes: Vec<Scope>,
    /// Runs of this key that may be unfinished at once; past it, a submission is refused (429).
    pub max_runs: u32,
}

impl NewKey {
    /// The key as `create_key` returns it, once stored: with its secret, this once.
    pub(crate) fn issued(self, id: String, secret: String, created_ms: i64) -> ApiKey {
        ApiKey {
            id,
            tenant: self.tenant,
            scopes: self.scopes,
            max_runs: self.max_runs,
            created_ms,
            secret: Some(secret),
        }
    }
}

/// A stored key. `secret` is set only in what `create_key` returns.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub scopes: Vec<Scope>,
    pub max_runs: u32,
    pub created_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A new key's id and secret: `rk_<id>_<64 hex digits>`.
pub(crate) fn new_secret() -> (String, String) {
    let id = format!("key_{}", crate::random_hex(6));
    let secret = format!("rk_{}_{}", &id[4..], crate::random_hex(32));
    (id, secret)
}

/// What the store keeps of a secret.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

pub(crate) fn parse_scopes(text: &str) -> Vec<Scope> {
    text.split(',').filter_map(Scope::parse).collect()
}
