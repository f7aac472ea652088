//! `stratus local` as Dask's nanny, on real processes: a worker killed with
//! SIGKILL is reaped (no zombie) and replaced by a new `stratus-worker` that is
//! again a direct child and registers with the scheduler; a worker that exits
//! with status 0 is reaped and not replaced; nothing restarts once the
//! cluster is stopping.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Parent pid and state letter of `pid`, if it exists.
fn ppid_state(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, state))
}

/// The program `pid` runs (the file name of its executable).
fn program(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// Live (not zombie) direct children of `parent` running `stratus-worker`.
fn worker_children(parent: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| matches!(ppid_state(pid), Some((p, s)) if p == parent && s != 'Z'))
        .filter(|&pid| program(pid) == "stratus-worker")
        .collect();
    pids.sort();
    pids
}

/// Whether `pid` is still a zombie child of `parent` (dead, not reaped).
fn zombie_child(pid: u32, parent: u32) -> bool {
    ppid_state(pid) == Some((parent, 'Z'))
}

/// Workers the scheduler lists: (name, pid).
fn registered(local: &Local) -> Vec<(String, u32)> {
    local.json("api/cluster")["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["pid"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

/// The worker count `stratus info` prints.
fn info_workers(local: &Local) -> Option<u32> {
    let out = stratus(&local.file, &["info"]);
    let text = stdout(&out);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("workers="))
        .and_then(|n| n.parse().ok())
}

fn log(local: &Local) -> String {
    std::fs::read_to_string(local.dir.path().join("local.log")).unwrap_or_default()
}

fn sigterm(pid: u32) {
    // SAFETY: plain kill(2).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

#[test]
fn a_killed_worker_is_reaped_and_replaced_by_a_direct_child() {
    let mut local = start_local(2, &[]);
    let parent = local.child.id();
    let workers = eventually(Duration::from_secs(10), "two worker children", || {
        let w = worker_children(parent);
        (w.len() == 2).then_some(w)
    });
    let victim = workers[0];
    let name = registered(&local)
        .into_iter()
        .find(|(_, pid)| *pid == victim)
        .map(|(name, _)| name)
        .expect("the victim is registered");

    let killed = Instant::now();
    kill9(victim);
    let (replacement, new_name) = eventually(
        Duration::from_secs(15),
        "a registered replacement for the killed worker",
        || {
            let children = worker_children(parent);
            if children.len() != 2 || children.contains(&victim) {
                return None;
            }
            let fresh = *children.iter().find(|&&pid| pid != workers[1])?;
            let registered = registered(&local);
            let mut pids: Vec<u32> = registered.iter().map(|(_, pid)| *pid).collect();
            pids.sort();
            if pids != children || info_workers(&local) != Some(2) {
                return None;
            }
            let new_name = registered.into_iter().find(|(_, pid)| *pid == fresh)?.0;
            Some((fresh, new_name))
        },
    );
    eprintln!(
        "{name} (pid {victim}) replaced by {new_name} (pid {replacement}) in {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    assert!(killed.elapsed() < Duration::from_secs(15));
    // The dead worker was reaped: not a zombie child of `stratus local`.
    assert!(
        !zombie_child(victim, parent),
        "pid {victim} is a zombie\n{}",
        local.log_tail()
    );
    // The replacement: a direct child running stratus-worker, as the others.
    assert_eq!(ppid_state(replacement).map(|(p, _)| p), Some(parent));
    assert_eq!(program(replacement), "stratus-worker");
    assert_eq!(new_name, format!("{name}-r1"));
    let text = log(&local);
    assert!(
        text.contains(&format!("worker {name} (pid {victim}) died"))
            && text.contains(&format!(
                "restarted worker {name} as {new_name} (pid {replacement}"
            )),
        "{text}"
    );
    // The cluster answers with both workers.
    let out = ok(&local.file, &["len", &fixture()]);
    assert_eq!(out.trim(), FIXTURE_ROWS.to_string());

    // Killed again and the cluster stopped during the back-off: no restart.
    kill9(replacement);
    sigterm(parent);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = local.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "stratus local did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "stratus local exited with {status}");
    let text = log(&local);
    assert_eq!(text.matches("restarted worker").count(), 1, "{text}");
    eventually(Duration::from_secs(10), "the other worker to exit", || {
        (!alive(workers[1])).then_some(())
    });
}

#[test]
fn a_worker_that_exits_with_status_0_is_reaped_and_not_replaced() {
    let local = start_local(2, &[]);
    let parent = local.child.id();
    let workers = eventually(Duration::from_secs(10), "two worker children", || {
        let w = worker_children(parent);
        (w.len() == 2).then_some(w)
    });
    // A worker stops cleanly (exit 0) on SIGTERM.
    sigterm(workers[0]);
    eventually(Duration::from_secs(10), "the exit to be reported", || {
        log(&local).contains("exited normally").then_some(())
    });
    assert!(!zombie_child(workers[0], parent));
    eventually(Duration::from_secs(10), "the scheduler to drop it", || {
        (info_workers(&local) == Some(1)).then_some(())
    });
    // Longer than the first back-off: still no replacement.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(worker_children(parent), [workers[1]]);
    let text = log(&local);
    assert!(
        !text.contains("restarting it in") && !text.contains("restarted worker"),
        "{text}"
    );
}
