//! Progress of long requests on the command line: an indicatif bar per step
//! when stdout and stderr are terminals, plain lines on stderr (one per tenth
//! of a step, with `-v`) otherwise, and nothing in scripts without `-v`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::ProgressObserver;

/// Where progress goes.
enum Sink {
    /// The bar of the step in progress, if any.
    Bar(Option<ProgressBar>),
    /// Lines on stderr: the last (kind, step, tenth) printed.
    Lines(Option<(String, String, u64)>),
    Quiet,
}

/// Shows the progress of a client's requests.
pub struct Reporter {
    sink: Mutex<Sink>,
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
    fn progress(&self, kind: &str, step: &str, done: u64, total: u64) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Bar(current) => {
                let same = current
                    .as_ref()
                    .is_some_and(|b| b.prefix() == kind && b.message() == step);
                if !same {
                    if let Some(old) = current.take() {
                        old.finish_and_clear();
                    }
                    *current = Some(new_bar(kind, step));
                }
                let bar = current.as_ref().expect("bar just set");
                bar.set_length(total);
                bar.set_position(done);
            }
            Sink::Lines(last) => {
                let tenth = done * 10 / total.max(1);
                let seen = last
                    .as_ref()
                    .is_some_and(|(k, s, t)| k == kind && s == step && *t >= tenth);
                if !seen {
                    eprintln!("{kind}: {step} {done}/{total}");
                    *last = Some((kind.to_string(), step.to_string(), tenth));
                }
            }
            Sink::Quiet => {}
        }
    }

    /// Clear the bar before the result is printed.
    fn finished(&self, _kind: &str) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Bar(current) => {
                if let Some(bar) = current.take() {
                    bar.finish_and_clear();
                }
            }
            Sink::Lines(last) => *last = None,
            Sink::Quiet => {}
        }
    }
}
