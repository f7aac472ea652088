//! Typed ids. Each is a `u64` on the wire; in the state machine a worker id
//! can not be passed where a task id is expected.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(id: u64) -> Self {
                $name(id)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }
    };
}

id_type!(
    /// A worker connection (the edge numbers them).
    WorkerId
);
id_type!(
    /// One client request (one QUIC stream).
    RequestId
);
id_type!(
    /// A job: the work of one request, or a background job (a rebuild).
    JobId
);
id_type!(
    /// A task handed to a worker.
    TaskId
);
id_type!(
    /// A persisted frame.
    FrameId
);

/// Hands out fresh job, task and frame ids (one sequence, so ids never
/// collide across kinds in logs).
#[derive(Debug)]
pub struct IdGen {
    next: u64,
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen { next: 1 }
    }
}

impl IdGen {
    /// Ids from `base` on (a scheduler's start picks a base above every
    /// earlier start's ids: see [`crate::event::Config::id_base`]).
    pub fn starting_at(base: u64) -> Self {
        IdGen { next: base.max(1) }
    }

    fn fresh(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    pub fn job(&mut self) -> JobId {
        JobId(self.fresh())
    }

    pub fn task(&mut self) -> TaskId {
        TaskId(self.fresh())
    }

    pub fn frame(&mut self) -> FrameId {
        FrameId(self.fresh())
    }
}
