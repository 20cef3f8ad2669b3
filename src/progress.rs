//! Progress of long CLI work (`rebuild`, `verify`, `export`, `import`, `replay`): a bar on a
//! terminal, a plain line every few seconds otherwise (logs, CI), and a last line when done.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    label: &'static str,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// `total` events when known (the log head), else a count without an end.
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg} {pos} events ({per_sec})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
            bar.set_message(label);
            bar
        });
        let now = Instant::now();
        Progress { label, total, bar, started: now, last_line: now }
    }

    /// `done` events so far.
    pub fn update(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                match self.total {
                    Some(total) => eprintln!("{}: {done}/{total} events ({:.0}s)", self.label, self.elapsed()),
                    None => eprintln!("{}: {done} events ({:.0}s)", self.label, self.elapsed()),
                }
            }
            None => {}
        }
    }

    /// Clears the bar (the command prints its own result).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
