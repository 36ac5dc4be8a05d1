//! Machine-readable results: every event of the run, written to a file when it ends.

use super::Reporter;
use crate::runner::Event;
use std::path::PathBuf;

pub struct JsonReporter {
    path: PathBuf,
    /// Written before the events: the shard of a partitioned run (absent otherwise, so an
    /// unpartitioned run's file is what it always was).
    header: Option<serde_json::Value>,
    events: Vec<Event>,
}

impl JsonReporter {
    pub fn new(path: PathBuf) -> Self {
        JsonReporter {
            path,
            header: None,
            events: Vec::new(),
        }
    }

    /// Records that this run is one shard of a partitioned run (`merge` checks the shards).
    pub fn with_shard(mut self, shard: Option<&crate::partition::Shard>) -> Self {
        self.header = shard.map(|s| serde_json::json!({ "event": "partition", "partition": s }));
        self
    }
}

impl Reporter for JsonReporter {
    fn event(&mut self, event: &Event) {
        self.events.push(event.clone());
        if matches!(event, Event::Finished(_)) {
            let body = match &self.header {
                None => serde_json::to_string_pretty(&self.events),
                // The header first, then the events as they always were.
                Some(h) => std::iter::once(serde_json::to_string_pretty(h))
                    .chain(self.events.iter().map(serde_json::to_string_pretty))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|parts| format!("[\n{}\n]", parts.join(",\n"))),
            }
            .unwrap_or_default();
            if let Err(e) = std::fs::write(&self.path, body) {
                eprintln!("pgssl: cannot write {}: {e}", self.path.display());
            }
        }
    }
}
