//! Behaviour groups: the rows of docs/drivers.md. A scenario file names its group (`group =`),
//! a case may name another; the vocabulary is fixed so the table's rows stay few and ordered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What part of a client's TLS behaviour a case shows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// disable, allow, prefer: what is tried, what falls back to plaintext.
    Sslmode,
    /// What `require` verifies, with and without a root file.
    Require,
    /// verify-ca against verify-full, root files, trust anchors.
    Verification,
    /// Host name rules: CN and alt names, IP addresses, wildcards, spellings.
    HostNames,
    /// Client certificates: key formats, passwords, permissions, which certificate is sent.
    ClientKeys,
    /// Certificate revocation lists, client and server side.
    Crls,
    /// Channel binding and the authentication options around it.
    ChannelBinding,
    /// Direct TLS negotiation (sslnegotiation=direct).
    DirectNegotiation,
    /// Partial chains, path building, X.509 constraints and extensions.
    Chains,
    /// TLS protocol version bounds.
    ProtocolBounds,
    /// Everything else: GSSAPI, Unix sockets, host lists, newer options, session facts.
    Other,
}

impl Group {
    pub const ALL: [Group; 11] = [
        Group::Sslmode,
        Group::Require,
        Group::Verification,
        Group::HostNames,
        Group::ClientKeys,
        Group::Crls,
        Group::ChannelBinding,
        Group::DirectNegotiation,
        Group::Chains,
        Group::ProtocolBounds,
        Group::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Sslmode => "sslmode",
            Group::Require => "require",
            Group::Verification => "verification",
            Group::HostNames => "host-names",
            Group::ClientKeys => "client-keys",
            Group::Crls => "crls",
            Group::ChannelBinding => "channel-binding",
            Group::DirectNegotiation => "direct-negotiation",
            Group::Chains => "chains",
            Group::ProtocolBounds => "protocol-bounds",
            Group::Other => "other",
        }
    }

    /// The row title in docs/drivers.md.
    pub fn title(self) -> &'static str {
        match self {
            Group::Sslmode => "sslmode semantics (fallbacks)",
            Group::Require => "what require verifies, with and without a root file",
            Group::Verification => "verify-ca vs verify-full, root files",
            Group::HostNames => "host-name rules",
            Group::ClientKeys => "client keys: formats, passwords, which certificate is sent",
            Group::Crls => "CRLs",
            Group::ChannelBinding => "channel binding, require_auth",
            Group::DirectNegotiation => "direct negotiation",
            Group::Chains => "partial chains, path building, X.509 edges",
            Group::ProtocolBounds => "protocol bounds",
            Group::Other => "other options (GSSAPI, sockets, host lists, newer keywords)",
        }
    }
}
