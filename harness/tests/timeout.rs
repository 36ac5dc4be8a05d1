//! A server that stops answering must turn into a `timeout` outcome with every client stack,
//! no sooner than the deadline and promptly after it: silent from the start, silent after
//! answering the SSLRequest with `S`, and silent mid-session (after authentication, when the
//! session query is sent). The default stacks and a shim (psycopg: the harness kills it at
//! the deadline).

use pgssl::client::registry::source_stacks_dir;
use pgssl::client::{attempt, ConnectRequest, Stacks};
use pgssl::error_class::ErrorClass;
use pgssl::outcome::Outcome;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(2);

/// Serves every connection on a thread of its own with `serve`; returns the port.
fn fake_server(serve: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

/// Reads until the peer closes, answering nothing.
fn hold(mut stream: impl Read) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// Reads the 8-byte SSLRequest and answers `S`.
fn accept_ssl_request(stream: &mut TcpStream) {
    let mut request = [0u8; 8];
    stream.read_exact(&mut request).unwrap();
    stream.write_all(b"S").unwrap();
}

/// One protocol message: tag, length, body.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// TLS with the test PKI's server certificate, trust authentication, then silence: the
/// session query is never answered.
fn silent_mid_session(mut stream: TcpStream) {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
    accept_ssl_request(&mut stream);
    let pki = pki_dir();
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor
        .set_certificate_chain_file(pki.join("server-cn-only.crt"))
        .unwrap();
    acceptor
        .set_private_key_file(pki.join("server-cn-only.key"), SslFiletype::PEM)
        .unwrap();
    let Ok(mut tls) = acceptor.build().accept(stream) else {
        return;
    };
    let mut len = [0u8; 4];
    if tls.read_exact(&mut len).is_err() {
        return;
    }
    let mut startup = vec![0u8; i32::from_be_bytes(len) as usize - 4];
    if tls.read_exact(&mut startup).is_err() {
        return;
    }
    let mut reply = message(b'R', &0i32.to_be_bytes());
    for (k, v) in [
        ("server_version", "15.0"),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("DateStyle", "ISO, MDY"),
    ] {
        reply.extend(message(b'S', format!("{k}\0{v}\0").as_bytes()));
    }
    reply.extend(message(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
    reply.extend(message(b'Z', b"I"));
    if tls.write_all(&reply).is_ok() {
        hold(tls);
    }
}

fn pki_dir() -> std::path::PathBuf {
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/pki.toml");
    pgssl::pki::PkiSpec::load(&spec)
        .unwrap()
        .materialize(&pgssl::pki::cache_root())
        .unwrap()
        .dir
}

/// Every stack against `port` with `sslmode` (and `extra` options) must end in `timeout`,
/// after the deadline and within a second and a half of it.
fn every_stack_times_out(port: u16, sslmode: &str, extra: &[(&str, String)]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stacks = Stacks::load(&source_stacks_dir()).unwrap();
    let mut names = stacks.default_names();
    names.push("psycopg".into());
    for name in &names {
        let client = stacks.client(name).unwrap();
        let request = ConnectRequest {
            params: vec![
                ("host".into(), "localhost".into()),
                ("hostaddr".into(), "127.0.0.1".into()),
                ("port".into(), port.to_string()),
                ("user".into(), "nobody".into()),
                ("dbname".into(), "postgres".into()),
                ("sslmode".into(), sslmode.into()),
            ]
            .into_iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .collect(),
            timeout: DEADLINE,
            queries: Vec::new(),
            env: Vec::new(),
            pki_dir: None,
        };
        let start = Instant::now();
        let outcome = rt.block_on(attempt(client.as_ref(), request)).unwrap();
        let took = start.elapsed();
        assert!(
            matches!(
                outcome,
                Outcome::Failed {
                    class: ErrorClass::Timeout,
                    ..
                }
            ),
            "{name} ({sslmode}): {outcome:?}"
        );
        assert!(took >= DEADLINE, "{name} gave up early, after {took:?}");
        assert!(
            took < DEADLINE + Duration::from_millis(1500),
            "{name} took {took:?}"
        );
    }
}

#[test]
fn a_silent_server_becomes_a_timeout() {
    every_stack_times_out(fake_server(hold), "prefer", &[]);
}

#[test]
fn a_server_silent_after_its_s_becomes_a_timeout() {
    let port = fake_server(|mut stream| {
        accept_ssl_request(&mut stream);
        hold(stream);
    });
    every_stack_times_out(port, "require", &[]);
}

#[test]
fn a_server_silent_mid_session_becomes_a_timeout() {
    // The root file and the certificate's name, so every stack accepts the handshake
    // (native-tls's `require` verifies chain and name, against the system store without one).
    let root = pki_dir().join("root+server_ca.crt").display().to_string();
    every_stack_times_out(
        fake_server(silent_mid_session),
        "require",
        &[
            ("sslrootcert", root),
            ("host", "common-name.pg-ssltest.test".into()),
        ],
    );
}
