//! How many workers the cluster wants, for an autoscaler to act on (Dask's
//! `Adaptive`): enough to hold the persisted data within
//! [`MEMORY_FRACTION`] of their memory limits, and enough threads to finish
//! the queued and running work within [`TARGET_DURATION`] at the recent
//! mean task time, between the operator's minimum and maximum. A pure
//! function of a [`Load`] snapshot: the scheduler publishes its answer as
//! `GET /api/adaptive` and the gauge `stratus_scheduler_desired_workers`;
//! hysteresis (how long to wait before scaling down) is the autoscaler's.

use std::time::Duration;

/// Work should finish within this long on the wanted workers (Dask's
/// `target_duration`).
pub const TARGET_DURATION: Duration = Duration::from_secs(5);
/// Persisted data should fill at most this share of the workers' memory
/// limits, leaving room for tasks' working memory and deliveries.
pub const MEMORY_FRACTION: f64 = 0.8;
/// Assumed task time before any task has ended.
pub const DEFAULT_TASK_SECONDS: f64 = 0.5;

/// The operator's bounds on the number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub minimum: u32,
    pub maximum: u32,
}

impl Default for Bounds {
    /// 0 to 100 workers: a pool that scales to zero, as the deployment's.
    fn default() -> Self {
        Bounds {
            minimum: 0,
            maximum: 100,
        }
    }
}

/// What the cluster holds and has to do, as the scheduler sees it now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    pub workers: u32,
    /// Threads of all workers.
    pub threads: u32,
    /// Memory limits of all workers, in bytes (0: no limit).
    pub memory_limit: u64,
    /// Bytes of persisted partitions (those held and those being rebuilt).
    pub persisted_bytes: u64,
    /// Tasks queued or running.
    pub tasks: usize,
    /// Mean time of recently ended tasks, if any ended.
    pub mean_task_seconds: Option<f64>,
}

/// The answer, with its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Workers wanted: `max(by_memory, by_work)` within the bounds.
    pub target: u32,
    pub minimum: u32,
    pub maximum: u32,
    /// Workers needed to hold the persisted data.
    pub by_memory: u32,
    /// Workers needed to finish the work within [`TARGET_DURATION`].
    pub by_work: u32,
}

/// How many workers the cluster wants (see the module doc). Without
/// workers to measure, a worker is assumed to have one thread, and any data
/// or work asks for at least one.
pub fn desired_workers(load: &Load, bounds: Bounds) -> Target {
    let per_worker = |total: f64| {
        if load.workers == 0 {
            None
        } else {
            Some(total / load.workers as f64)
        }
    };
    let by_memory = match per_worker(load.memory_limit as f64) {
        _ if load.persisted_bytes == 0 => 0,
        Some(limit) if limit > 0.0 => {
            (load.persisted_bytes as f64 / (limit * MEMORY_FRACTION)).ceil() as u32
        }
        // No limit to measure against: keep what holds the data now.
        _ => load.workers.max(1),
    };
    let by_work = if load.tasks == 0 {
        0
    } else {
        let threads = per_worker(load.threads as f64).unwrap_or(1.0).max(1.0);
        let seconds = load.tasks as f64 * load.mean_task_seconds.unwrap_or(DEFAULT_TASK_SECONDS);
        let wanted = seconds / (TARGET_DURATION.as_secs_f64() * threads);
        (wanted.ceil() as u32).max(1)
    };
    let maximum = bounds.maximum.max(bounds.minimum);
    Target {
        target: by_memory.max(by_work).clamp(bounds.minimum, maximum),
        minimum: bounds.minimum,
        maximum,
        by_memory,
        by_work,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn load(workers: u32) -> Load {
        Load {
            workers,
            threads: workers * 4,
            memory_limit: workers as u64 * 10 * GIB,
            ..Load::default()
        }
    }

    #[test]
    fn an_idle_empty_cluster_wants_its_minimum() {
        let t = desired_workers(&load(3), Bounds::default());
        assert_eq!((t.target, t.by_memory, t.by_work), (0, 0, 0));
        let t = desired_workers(
            &load(3),
            Bounds {
                minimum: 2,
                maximum: 10,
            },
        );
        assert_eq!(t.target, 2);
    }

    #[test]
    fn persisted_data_keeps_the_workers_that_hold_it_within_the_memory_fraction() {
        // 25 GiB over 10 GiB workers at 80%: 8 GiB each, so 4 workers.
        let t = desired_workers(
            &Load {
                persisted_bytes: 25 * GIB,
                ..load(2)
            },
            Bounds::default(),
        );
        assert_eq!((t.by_memory, t.target), (4, 4));
    }

    #[test]
    fn queued_work_asks_for_threads_to_finish_within_the_target_duration() {
        // 400 tasks of 0.2 s = 80 s of work; 5 s on 4-thread workers: 4.
        let busy = Load {
            tasks: 400,
            mean_task_seconds: Some(0.2),
            ..load(1)
        };
        let t = desired_workers(&busy, Bounds::default());
        assert_eq!((t.by_work, t.target), (4, 4));
        // Capped by the maximum.
        let t = desired_workers(
            &busy,
            Bounds {
                minimum: 0,
                maximum: 3,
            },
        );
        assert_eq!(t.target, 3);
        // A little work still wants a worker.
        let t = desired_workers(
            &Load {
                tasks: 1,
                mean_task_seconds: Some(0.01),
                ..load(2)
            },
            Bounds::default(),
        );
        assert_eq!(t.by_work, 1);
    }

    #[test]
    fn a_cluster_with_no_worker_and_work_to_do_wants_one() {
        let t = desired_workers(
            &Load {
                tasks: 3,
                ..Load::default()
            },
            Bounds::default(),
        );
        assert_eq!(t.target, 1);
        // Lost data (partitions to rebuild) too.
        let t = desired_workers(
            &Load {
                persisted_bytes: GIB,
                ..Load::default()
            },
            Bounds::default(),
        );
        assert_eq!(t.target, 1);
    }

    #[test]
    fn bounds_the_wrong_way_round_keep_the_minimum() {
        let t = desired_workers(
            &load(1),
            Bounds {
                minimum: 5,
                maximum: 2,
            },
        );
        assert_eq!((t.target, t.maximum), (5, 5));
    }
}
