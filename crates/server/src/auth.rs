//! The API key, checked by layers: [`identify_caller`] marks every request with a [`Caller`]
//! (did it carry the key?), [`require_key`] guards the routes that need the key (feedback, model
//! admin, reading sessions) before their handlers run.
//!
//! A key is sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`. The comparison takes
//! time that depends only on the expected key's length, so response timing does not reveal how
//! many leading bytes of a guess were right.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{AppState, Error, Result};

/// Who sent a request, as far as the API cares: with the server's key or without. Every
/// request carries one (an extension put by [`identify_caller`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The request carried the server's API key.
    pub keyed: bool,
}

/// Layer on the whole app: marks each request with its [`Caller`].
pub async fn identify_caller(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let keyed = check_api_key(req.headers(), state.api_key()).is_ok();
    req.extensions_mut().insert(Caller { keyed });
    next.run(req).await
}

/// Route layer: the request must carry the key (401 with `{error, error_type}` otherwise).
pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check_api_key(req.headers(), state.api_key()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Name of the alternative key header.
pub const API_KEY_HEADER: &str = "x-api-key";

/// `Ok` when `headers` carry `expected` in either accepted header; `Unauthorized` otherwise.
/// An empty `expected` accepts nothing (a misconfigured empty key must not open the API).
/// Surrounding whitespace counts on neither side: presented keys are trimmed, so a configured
/// key read with a trailing newline (an env file, a secret mount) must be too.
pub fn check_api_key(headers: &HeaderMap, expected: &str) -> Result<()> {
    let expected = expected.trim();
    let mut presented = Vec::new();
    for v in headers.get_all(AUTHORIZATION) {
        let Ok(v) = v.to_str() else { continue };
        let v = v.trim();
        // The scheme is case-insensitive (RFC 9110 §11.1).
        if let Some((scheme, token)) = v.split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
        {
            presented.push(token.trim().as_bytes());
        }
    }
    for v in headers.get_all(API_KEY_HEADER) {
        presented.push(v.as_bytes().trim_ascii());
    }
    if presented.is_empty() {
        return Err(Error::Unauthorized(
            "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`".into(),
        ));
    }
    // Check every presented key (no early exit) so timing does not say which header matched.
    let mut ok = false;
    for key in presented {
        ok |= constant_time_eq(key, expected.as_bytes());
    }
    if ok && !expected.is_empty() {
        Ok(())
    } else {
        Err(Error::Unauthorized("invalid API key".into()))
    }
}

/// Byte equality whose running time depends only on `expected.len()`.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        // Cycle through `given` (any byte when it is empty) so every expected byte is compared.
        let g = if given.is_empty() {
            !e
        } else {
            given[i % given.len()]
        };
        diff |= g ^ e;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::{check_api_key, constant_time_eq};

    #[test]
    fn a_configured_key_with_surrounding_whitespace_still_matches() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-api-key", "k3y".parse().unwrap());
        assert!(check_api_key(&h, "k3y\n").is_ok());
        assert!(check_api_key(&h, "  k3y ").is_ok());
        assert!(check_api_key(&h, "k3").is_err());
        // Whitespace alone is still no key.
        assert!(check_api_key(&h, " \n").is_err());
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secretsecret", b"secret"));
        assert!(!constant_time_eq(b"sec", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        // Cycling `given` must not make a repeated prefix equal.
        assert!(!constant_time_eq(b"ab", b"abab"));
        assert!(constant_time_eq(b"", b""));
    }
}
