//! What the cluster has been doing, for the dashboard and progress bars: a
//! record per client request (its steps and their progress) and a bounded
//! stream of ended tasks (which worker ran what, when).
//!
//! Part of the sans-IO state machine: fed by `SchedulerState` with `Instant`s;
//! the actor turns them into wall-clock times when it renders JSON.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Ended requests kept (running ones are always kept).
pub const KEPT_REQUESTS: usize = 50;
/// Ended tasks kept in the task stream.
pub const KEPT_TASKS: usize = 1000;

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestState {
    Running,
    Ok,
    Error(String),
    Cancelled,
}

/// Progress of one step of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct StepProgress {
    pub name: &'static str,
    pub done: u64,
    pub total: u64,
}

/// One client request as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub id: u64,
    pub kind: &'static str,
    pub target: Option<String>,
    pub run: Option<String>,
    /// Name of the client certificate that sent the request.
    pub client: String,
    pub state: RequestState,
    pub started: Instant,
    pub ended: Option<Instant>,
    pub steps: Vec<StepProgress>,
    /// Bytes its tasks read from object stores.
    pub fetched: u64,
    /// What it is waiting for, when it can not progress (`"workers"`: the
    /// cluster has none).
    pub waiting: Option<&'static str>,
}

/// One ended task.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: u64,
    pub request: Option<u64>,
    pub kind: &'static str,
    pub worker: String,
    pub start: Instant,
    pub end: Instant,
    /// "ok", "failed" or "lost".
    pub outcome: &'static str,
}

/// Requests and tasks, bounded.
#[derive(Debug, Default)]
pub struct Activity {
    requests: VecDeque<RequestRecord>,
    index: HashMap<u64, usize>,
    tasks: VecDeque<TaskRecord>,
    /// Requests whose progress changed since the last `take_changed`.
    changed: Vec<u64>,
    /// Bumped on every change (for live views).
    pub version: u64,
}

impl Activity {
    fn get_mut(&mut self, request: u64) -> Option<&mut RequestRecord> {
        let i = *self.index.get(&request)?;
        self.requests.get_mut(i)
    }

    fn reindex(&mut self) {
        self.index = self
            .requests
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id, i))
            .collect();
    }

    /// A request arrived.
    pub fn request_started(
        &mut self,
        id: u64,
        kind: &'static str,
        target: Option<String>,
        run: Option<String>,
        client: String,
        now: Instant,
    ) {
        self.requests.push_back(RequestRecord {
            id,
            kind,
            target,
            run,
            client,
            state: RequestState::Running,
            started: now,
            ended: None,
            steps: Vec::new(),
            fetched: 0,
            waiting: None,
        });
        self.index.insert(id, self.requests.len() - 1);
        self.version += 1;
    }

    /// A request got its final answer (or its client went away).
    pub fn request_ended(&mut self, id: u64, state: RequestState, now: Instant) {
        let Some(r) = self.get_mut(id) else {
            return;
        };
        if r.state != RequestState::Running {
            return;
        }
        r.state = state;
        r.ended = Some(now);
        self.version += 1;
        // Drop the oldest ended requests beyond the bound.
        let ended = self
            .requests
            .iter()
            .filter(|r| r.state != RequestState::Running)
            .count();
        if ended > KEPT_REQUESTS {
            let mut excess = ended - KEPT_REQUESTS;
            self.requests.retain(|r| {
                if excess > 0 && r.state != RequestState::Running {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
            self.reindex();
        }
    }

    /// A task of `request` was queued for `step`.
    pub fn task_added(&mut self, request: u64, step: &'static str) {
        let Some(r) = self.get_mut(request) else {
            return;
        };
        match r.steps.iter_mut().find(|s| s.name == step) {
            Some(s) => s.total += 1,
            None => r.steps.push(StepProgress {
                name: step,
                done: 0,
                total: 1,
            }),
        }
        self.changed.push(request);
        self.version += 1;
    }

    /// A task ended (reported, or lost with its worker).
    pub fn task_ended(&mut self, record: TaskRecord, step: &'static str) {
        if record.outcome == "ok" {
            if let Some(r) = record.request.and_then(|id| self.get_mut(id)) {
                if let Some(s) = r.steps.iter_mut().find(|s| s.name == step) {
                    s.done = (s.done + 1).min(s.total);
                }
                let id = r.id;
                self.changed.push(id);
            }
        }
        self.tasks.push_back(record);
        while self.tasks.len() > KEPT_TASKS {
            self.tasks.pop_front();
        }
        self.version += 1;
    }

    /// A task of `request` read `bytes` from an object store.
    pub fn fetched(&mut self, request: u64, bytes: u64) {
        if bytes == 0 {
            return;
        }
        if let Some(r) = self.get_mut(request) {
            r.fetched = r.fetched.saturating_add(bytes);
            self.changed.push(request);
            self.version += 1;
        }
    }

    /// Say what a running request waits for (`None`: nothing); true if
    /// that changed.
    pub fn set_waiting(&mut self, request: u64, waiting: Option<&'static str>) -> bool {
        let Some(r) = self.get_mut(request) else {
            return false;
        };
        if r.waiting == waiting || r.state != RequestState::Running {
            return false;
        }
        r.waiting = waiting;
        self.version += 1;
        true
    }

    /// When a request arrived.
    pub fn started(&self, request: u64) -> Option<Instant> {
        let i = *self.index.get(&request)?;
        self.requests.get(i).map(|r| r.started)
    }

    /// Requests whose progress changed since the last call, with their
    /// current (latest) step and the bytes they fetched.
    pub fn take_changed(&mut self) -> Vec<(u64, StepProgress, u64)> {
        let mut ids = std::mem::take(&mut self.changed);
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let r = self.get_mut(id)?;
                if r.state != RequestState::Running {
                    return None;
                }
                let fetched = r.fetched;
                r.steps.last().cloned().map(|s| (id, s, fetched))
            })
            .collect()
    }

    /// Requests, oldest first.
    pub fn requests(&self) -> impl DoubleEndedIterator<Item = &RequestRecord> {
        self.requests.iter()
    }

    /// Ended tasks, oldest first.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, request: u64, outcome: &'static str, now: Instant) -> TaskRecord {
        TaskRecord {
            id,
            request: Some(request),
            kind: "reduce",
            worker: "w".into(),
            start: now,
            end: now,
            outcome,
        }
    }

    #[test]
    fn steps_count_queued_and_done_tasks() {
        let now = Instant::now();
        let mut a = Activity::default();
        a.request_started(1, "describe", Some("isd".into()), None, "c".into(), now);
        a.task_added(1, "moments");
        a.task_added(1, "moments");
        a.task_ended(task(10, 1, "ok", now), "moments");
        a.task_ended(task(11, 1, "lost", now), "moments");
        let changed = a.take_changed();
        assert_eq!(
            changed,
            vec![(
                1,
                StepProgress {
                    name: "moments",
                    done: 1,
                    total: 2
                },
                0
            )]
        );
        assert!(a.take_changed().is_empty());
        a.request_ended(1, RequestState::Ok, now);
        assert_eq!(a.requests().next().unwrap().state, RequestState::Ok);
        assert_eq!(a.tasks().count(), 2);
    }

    #[test]
    fn history_is_bounded_but_running_requests_stay() {
        let now = Instant::now();
        let mut a = Activity::default();
        a.request_started(0, "persist", None, None, "c".into(), now);
        for id in 1..=(KEPT_REQUESTS as u64 + 10) {
            a.request_started(id, "len", None, None, "c".into(), now);
            a.request_ended(id, RequestState::Ok, now);
            a.task_ended(task(id, id, "ok", now), "x");
        }
        assert_eq!(a.requests().count(), KEPT_REQUESTS + 1);
        assert_eq!(a.requests().next().unwrap().id, 0);
        for _ in 0..KEPT_TASKS {
            a.task_ended(task(0, 0, "ok", now), "x");
        }
        assert_eq!(a.tasks().count(), KEPT_TASKS);
        // Indexes still find the right records after trimming.
        a.task_added(0, "load partitions");
        assert_eq!(a.take_changed()[0].0, 0);
    }
}
