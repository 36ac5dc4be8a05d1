//! pgssl: a conformance harness for TLS in the PostgreSQL protocol.
//!
//! Data flows one way: PKI spec and scenarios are loaded and validated ([`pki`],
//! [`scenario`]), a [`runtime`] starts server builds, [`client`] stacks connect, outcomes are
//! judged ([`outcome`]) and every result is an event for the [`report`] sinks ([`runner`]).

pub mod cache;
pub mod case_filter;
pub mod cleanup;
pub mod client;
pub mod diff;
pub mod drivers_doc;
pub mod error_class;
pub mod facts;
pub mod images;
pub mod lint;
pub mod matrix;
pub mod outcome;
pub mod partition;
pub mod pki;
pub mod report;
pub mod results;
pub mod runner;
pub mod runtime;
pub mod scenario;
