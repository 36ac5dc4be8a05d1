//! Progress of a long run on stderr: an indicatif bar with counts and an estimate when stderr
//! is a terminal, else a plain line every few seconds (CI logs keep no redrawn bars).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Plain progress lines come this often.
const LINE_EVERY: Duration = Duration::from_secs(15);

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    failed: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            bar: std::io::stderr().is_terminal().then(new_bar),
            total: 0,
            done: 0,
            failed: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    pub fn add_total(&mut self, n: usize) {
        self.total += n as u64;
        if let Some(b) = &mut self.bar {
            if b.is_finished() {
                *b = new_bar();
                b.set_position(self.done);
            }
            b.set_length(self.total);
        }
    }

    /// Prints a line without tearing the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finished_one(&mut self, ok: bool) {
        self.done += 1;
        self.failed += u64::from(!ok);
        let failed = self.failed;
        match &self.bar {
            Some(b) => {
                b.set_message(if failed > 0 {
                    format!("{failed} not ok")
                } else {
                    String::new()
                });
                b.set_position(self.done);
            }
            None if self.last_line.elapsed() >= LINE_EVERY && self.done < self.total => {
                self.last_line = Instant::now();
                let elapsed = self.started.elapsed().as_secs_f64();
                // Too few pairs say nothing about the rest (the first wait for servers).
                let left = if self.done * 50 >= self.total {
                    let left = elapsed / self.done as f64 * (self.total - self.done) as f64;
                    format!("about {left:.0} s left")
                } else {
                    "no estimate before 2%".to_string()
                };
                eprintln!(
                    "pgssl: {}/{} pairs done, {failed} not ok, {elapsed:.0} s elapsed, {left}",
                    self.done, self.total
                );
            }
            None => {}
        }
    }

    /// Removes the bar before the summary is printed, once every pair is done.
    pub fn clear(&self) {
        if let Some(b) = self.bar.as_ref().filter(|_| self.done >= self.total) {
            b.finish_and_clear();
        }
    }
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} {bar:30} {pos}/{len} pairs {msg} (about {eta} left)",
        )
        .expect("template"),
    );
    bar
}
