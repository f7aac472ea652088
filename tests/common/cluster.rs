//! Local clusters through the library (`stratus::local::LocalCluster`): one
//! per test ([`start_cluster`]), or one shared by the tests of a test binary
//! that only read it ([`start_shared`]), stopped when the test process exits.

use std::any::Any;
use std::future::Future;
use std::sync::{Mutex, Once};

use stratus::local::{LocalCluster, LocalOptions};
use stratus::Target;

/// Start `workers` workers of one thread and `memory_limit` bytes each, the
/// dashboard on a free loopback port; return once every worker registered.
///
/// One at a time in a test process: `LocalCluster` names its run directory
/// (and the scheduler file in it) after the process id and a number that is
/// nearly always the same, so a second one started in the same process may
/// find the first one's scheduler file. Start other clusters with
/// [`super::start_local`] (a process of their own).
pub async fn start_cluster(workers: u32, memory_limit: u64) -> LocalCluster {
    LocalCluster::start(&LocalOptions {
        workers,
        threads_per_worker: 1,
        memory_limit: Some(memory_limit),
        dashboard_address: Some("127.0.0.1:0".into()),
        ..LocalOptions::default()
    })
    .await
    .expect("start a local cluster")
}

/// A cluster shared by the tests of one test binary, and what its setup
/// prepared on it (persisted frames, their summaries).
pub struct Shared<T> {
    pub target: Target,
    /// Dashboard URL, ending in `/`.
    pub dashboard: String,
    pub worker_pids: Vec<u32>,
    pub prepared: T,
}

impl<T> Shared<T> {
    /// A new client connection to the shared cluster.
    pub async fn client(&self) -> stratus::Client {
        stratus::Client::connect(&self.target)
            .await
            .expect("connect to the shared cluster")
    }
}

/// Start a cluster as [`start_cluster`] does, run `setup` on it, and keep it
/// until the test process exits.
///
/// Every test runs on a thread of its own, and the cluster's processes get
/// `PR_SET_PDEATHSIG` for the thread that started them: so a thread of its
/// own starts the cluster and then waits for the process to exit (when the
/// kernel stops the children even if the test process is killed). At a
/// normal exit, [`drop_at_exit`] stops them and removes their directories.
/// Keep the result in a `static OnceLock` so that it starts once.
pub fn start_shared<T, F, Fut>(workers: u32, memory_limit: u64, setup: F) -> Shared<T>
where
    T: Send + 'static,
    F: FnOnce(Target) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("shared-cluster".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let cluster = runtime.block_on(start_cluster(workers, memory_limit));
            let prepared = runtime.block_on(setup(cluster.target.clone()));
            let shared = Shared {
                target: cluster.target.clone(),
                dashboard: cluster.dashboard.clone(),
                worker_pids: cluster.worker_pids(),
                prepared,
            };
            drop_at_exit(cluster);
            drop(runtime);
            let _ = sender.send(shared);
            // The cluster's parent thread lives as long as the process.
            loop {
                std::thread::park();
            }
        })
        .expect("start the shared cluster's thread");
    receiver
        .recv()
        .expect("the shared cluster failed to start or set up (its panic is above)")
}

/// What [`drop_at_exit`] keeps.
static AT_EXIT: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

/// Keep `value` until the test process exits, then drop it (last kept,
/// first dropped): shared clusters stop, shared temp dirs go.
pub fn drop_at_exit<T: Send + 'static>(value: T) {
    static REGISTER: Once = Once::new();
    extern "C" fn drop_kept() {
        // try_lock: never wait at exit for a thread that died holding it.
        if let Ok(mut kept) = AT_EXIT.try_lock() {
            while let Some(value) = kept.pop() {
                drop(value);
            }
        }
    }
    REGISTER.call_once(|| {
        // SAFETY: registers a plain function to run at exit(3).
        unsafe {
            libc::atexit(drop_kept);
        }
    });
    AT_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(value));
}
