//! Who is calling: `Authorization: Bearer KEY`, a key made by `reagent keys create`, stored hashed.
//! A key sees only its tenant's runs and may do only what its scopes allow. A store without
//! keys serves anyone who can reach it, so `serve` then listens on loopback only.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use reagent_store::{ApiKey, Scope, hash_secret};

use super::App;
use super::api::ApiError;

/// Why `serve` refuses an address beyond loopback.
pub const LOOPBACK_ONLY: &str = "the run store has no API keys, so anyone who can reach the server could run its agents: \
                                 create one with `reagent keys create --tenant NAME --scopes runs:read,runs:write`, or \
                                 listen on 127.0.0.1";

/// Whether listening on `addr` needs API keys: anything but loopback does.
pub fn needs_keys(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// The caller of a request.
pub(crate) struct Caller {
    pub(crate) tenant: String,
    pub(crate) key: Option<ApiKey>,
}

impl Caller {
    /// Who made a decision, for the record.
    pub(crate) fn name(&self) -> String {
        self.key.as_ref().map_or_else(|| "anonymous (no keys)".to_string(), |k| k.id.clone())
    }
}

/// The caller of a request that needs `scope`: 401 without a known key (where keys exist), 403
/// without the scope.
pub(crate) async fn caller(app: &App, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
    // Without keys the server is open (and listens on loopback only); a key a client sends
    // anyway (OpenAI clients always send one) is ignored.
    if app.runs.store().keys().await.map_err(ApiError::store)?.is_empty() {
        return Ok(Caller { tenant: String::new(), key: None });
    }
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    let Some(given) = given else {
        return Err(ApiError::unauthorized("send `Authorization: Bearer KEY` with a key from `reagent keys create`"));
    };
    let Some(secret) = given.strip_prefix("Bearer ").map(str::trim) else {
        return Err(ApiError::unauthorized("the Authorization header must be `Bearer KEY`"));
    };
    let key = app.runs.store().key_by_hash(&hash_secret(secret)).await.map_err(ApiError::store)?;
    let Some(key) = key else { return Err(ApiError::unauthorized("this API key is not known to the server")) };
    if !key.allows(scope) {
        let message = format!("this key lacks the scope {}; create a key with it", scope.as_str());
        return Err(ApiError::new(axum::http::StatusCode::FORBIDDEN, "forbidden", message));
    }
    Ok(Caller { tenant: key.tenant.clone(), key: Some(key) })
}
