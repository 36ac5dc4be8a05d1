//! A server that accepts and then says nothing must turn into a `timeout` outcome, promptly,
//! with every default client stack and a shim (psycopg: the harness kills it at the deadline).

use pgssl::client::registry::source_stacks_dir;
use pgssl::client::{attempt, ConnectRequest, Stacks};
use pgssl::error_class::ErrorClass;
use pgssl::outcome::Outcome;
use std::time::{Duration, Instant};

#[test]
fn a_silent_server_becomes_a_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold connections without ever answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
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
                ("sslmode".into(), "prefer".into()),
            ],
            timeout: Duration::from_secs(2),
            queries: Vec::new(),
            env: Vec::new(),
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
            "{name}: {outcome:?}"
        );
        assert!(took < Duration::from_secs(5), "{name} took {took:?}");
    }
}
