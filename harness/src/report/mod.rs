//! Reporters: sinks on the runner's event stream, one trait, one file per format; and the
//! documents made from finished results (JUnit XML, the HTML matrix).

pub mod html;
mod human;
mod json;
pub mod junit;
mod progress;
mod tap;

pub use human::HumanReporter;
pub use json::JsonReporter;
pub use tap::TapReporter;

use crate::runner::Event;

/// A sink for runner events.
pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
}

/// Feeds every event to every reporter, in order.
pub struct Fanout(pub Vec<Box<dyn Reporter>>);

impl Reporter for Fanout {
    fn event(&mut self, event: &Event) {
        for r in &mut self.0 {
            r.event(event);
        }
    }
}
