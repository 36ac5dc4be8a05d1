//! The attempt protocol between pgssl and a client stack's shim: JSON lines over the shim's
//! stdin and stdout. The shim says `hello` once; the harness then sends `request`s, each with
//! an id, and the shim answers each with a `reply` carrying that id, in any order.
//! `docs/schema/attempt.schema.json` is generated from these types (`pgssl lint --write-docs`).

use crate::error_class::ErrorClass;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The protocol version this harness speaks; a shim's `hello` must name the same.
pub const PROTOCOL_VERSION: u32 = 1;

/// One line of the protocol, in either direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// Stack -> harness, once, first: who is speaking.
    Hello(Hello),
    /// Harness -> stack: make one connection attempt.
    Request(Request),
    /// Stack -> harness: how one attempt ended.
    Reply(Reply),
}

/// What the stack says about itself. These become the stack's facts for selectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Must be [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The driver, e.g. `psycopg`.
    pub name: String,
    /// The driver's own version, e.g. `3.1.7`.
    pub version: String,
    /// The TLS library doing the handshake (`openssl`, `nss`, ...).
    pub tls_library: String,
    /// That library's version; empty when the stack cannot tell.
    #[serde(default)]
    pub tls_version: String,
    /// The libpq the driver uses, where it uses one (`16.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libpq_version: Option<String>,
    /// libpq keywords the stack understands; informative (the stack reports an unknown one
    /// as a failed attempt, as its users would see it).
    #[serde(default)]
    pub options: Vec<String>,
    /// The stack keeps process-wide state that one attempt could leak into another (NSS
    /// keeps one certificate store per process): the harness then gives each process one
    /// attempt at a time, runs several processes side by side, and ends a process whose reply
    /// says `retire`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_attempt_at_a_time: bool,
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Unique within the shim process; the reply carries it back.
    pub id: u64,
    /// libpq keyword/value pairs in order, PKI names already resolved to absolute paths.
    pub params: Vec<(String, String)>,
    /// Environment variables the case sets (`SSL_CERT_FILE`, ...). When there are any, the
    /// harness runs this attempt in a fresh shim process started with them set, so a shim may
    /// ignore this field.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The one statement a connected attempt runs: the session query, with the case's queries
    /// already folded in as extra columns. Every column is text.
    pub session_query: String,
    /// The case's own queries (already part of `session_query`; informative).
    #[serde(default)]
    pub queries: Vec<String>,
    /// Milliseconds the whole attempt may take; the harness kills the shim after that.
    pub deadline_ms: u64,
    /// The directory of the scenario's PKI (every certificate, key and CRL it generated).
    /// OpenSSL 3.0 decodes an RSA-PSS public key wrongly when two threads are the first to do
    /// so at once; a shim that runs attempts in threads over OpenSSL reads the certificates of
    /// each new directory once, before its first attempt with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki_dir: Option<String>,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    pub result: AttemptResult,
    /// This process takes no more requests: the attempt left state behind that the next one
    /// would see (NSS could not shut down). The harness ends it and starts another.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retire: bool,
}

/// Connected (and the session query answered) or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AttemptResult {
    Connected(Connected),
    Failed(Failed),
}

/// A session: what the client saw, and the session query's one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connected {
    /// Whether the client's connection is encrypted.
    pub encrypted: bool,
    /// The TLS version the client negotiated (`TLSv1.3`), empty without TLS.
    #[serde(default)]
    pub tls_version: String,
    /// The cipher the client negotiated, empty without TLS.
    #[serde(default)]
    pub cipher: String,
    /// The session query's columns, as text, in order (NULL as the empty string).
    pub columns: Vec<String>,
}

/// A failed attempt, as the stack's users would see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    /// The native error message, verbatim.
    pub message: String,
    /// A native error code (SQLSTATE, an exception type, an NSS error name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A class the stack itself is sure of; otherwise its `errors.toml` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ErrorClass>,
}

/// docs/schema/attempt.schema.json.
pub fn schema() -> String {
    let schema = schemars::schema_for!(Line);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_with_a_type_tag() {
        let reply = Line::Reply(Reply {
            id: 7,
            result: AttemptResult::Failed(Failed {
                message: "boom".into(),
                code: None,
                class: Some(ErrorClass::HostnameMismatch),
            }),
            retire: false,
        });
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            text,
            r#"{"type":"reply","id":7,"result":{"failed":{"message":"boom","class":"hostname_mismatch"}}}"#
        );
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), reply);
        assert!(serde_json::from_str::<Line>(r#"{"type":"reply","id":1}"#).is_err());
        assert!(serde_json::from_str::<Line>(r#"{"type":"hullo"}"#).is_err());
    }
}
