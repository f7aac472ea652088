//! Progress of long requests on the command line: an indicatif bar per step
//! when stdout and stderr are terminals, plain lines on stderr (one per tenth
//! of a step, with `-v`) otherwise, and nothing in scripts without `-v`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::ProgressObserver;
use stratus_protocol::units::format_bytes;

/// Where progress goes.
enum Sink {
    /// The bar of the step in progress, if any, and the step's name.
    Bar(Option<(ProgressBar, String)>),
    /// Lines on stderr: the last (kind, step, tenth) printed.
    Lines(Option<(String, String, u64)>),
    Quiet,
}

/// Shows the progress of a client's requests.
pub struct Reporter {
    sink: Mutex<Sink>,
    /// Bytes the current request read from object stores.
    fetched: Mutex<u64>,
}

impl Reporter {
    /// Bars on a terminal; plain lines if `verbose`; else nothing.
    pub fn new(verbose: bool) -> Arc<Reporter> {
        let terminal = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let sink = if terminal {
            Sink::Bar(None)
        } else if verbose {
            Sink::Lines(None)
        } else {
            Sink::Quiet
        };
        Arc::new(Reporter {
            sink: Mutex::new(sink),
            fetched: Mutex::new(0),
        })
    }
}

fn new_bar(kind: &str, step: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} {msg:<22} [{bar:30}] {pos}/{len} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(kind.to_string());
    bar.set_message(step.to_string());
    bar
}

impl ProgressObserver for Reporter {
    fn fetched(&self, _kind: &str, bytes: u64) {
        *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) = bytes;
    }

    fn progress(&self, kind: &str, step: &str, done: u64, total: u64) {
        let fetched = *self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Bar(current) => {
                let same = current
                    .as_ref()
                    .is_some_and(|(b, s)| b.prefix() == kind && s == step);
                if !same {
                    if let Some((old, _)) = current.take() {
                        old.finish_and_clear();
                    }
                    *current = Some((new_bar(kind, step), step.to_string()));
                }
                let (bar, _) = current.as_ref().expect("bar just set");
                if fetched > 0 {
                    bar.set_message(format!("{step}, {} fetched", format_bytes(fetched)));
                }
                bar.set_length(total);
                bar.set_position(done);
            }
            Sink::Lines(last) => {
                let tenth = done * 10 / total.max(1);
                let seen = last
                    .as_ref()
                    .is_some_and(|(k, s, t)| k == kind && s == step && *t >= tenth);
                if !seen {
                    match fetched {
                        0 => eprintln!("{kind}: {step} {done}/{total}"),
                        bytes => eprintln!(
                            "{kind}: {step} {done}/{total} ({} fetched)",
                            format_bytes(bytes)
                        ),
                    }
                    *last = Some((kind.to_string(), step.to_string(), tenth));
                }
            }
            Sink::Quiet => {}
        }
    }

    /// Clear the bar before the result is printed.
    fn finished(&self, _kind: &str) {
        *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Bar(current) => {
                if let Some((bar, _)) = current.take() {
                    bar.finish_and_clear();
                }
            }
            Sink::Lines(last) => *last = None,
            Sink::Quiet => {}
        }
    }
}
