//! Machine-readable results: every event of the run, written to a file when it ends.

use super::Reporter;
use crate::runner::Event;
use std::path::PathBuf;

pub struct JsonReporter {
    path: PathBuf,
    events: Vec<Event>,
}

impl JsonReporter {
    pub fn new(path: PathBuf) -> Self {
        JsonReporter {
            path,
            events: Vec::new(),
        }
    }
}

impl Reporter for JsonReporter {
    fn event(&mut self, event: &Event) {
        self.events.push(event.clone());
        if matches!(event, Event::Finished(_)) {
            let body = serde_json::to_string_pretty(&self.events).unwrap_or_default();
            if let Err(e) = std::fs::write(&self.path, body) {
                eprintln!("pgssl: cannot write {}: {e}", self.path.display());
            }
        }
    }
}
