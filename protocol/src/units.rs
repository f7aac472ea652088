//! Byte sizes and durations as people write them (`8GiB`, `512MB`, `auto`;
//! `30s`, `10m`, `1h`) and print them.

/// Parse `123`, `8GiB`, `1.5GB`, `512MiB`, `64kB`. Units are case-insensitive;
/// `KiB`/`MiB`/`GiB`/`TiB` are powers of 1024, `kB`/`MB`/`GB`/`TB` of 1000.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size '{text}': expected e.g. 8GiB, 512MB or 1000000"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => return Err(format!("invalid size '{text}': unknown unit '{other}'")),
    };
    Ok((value * scale).round() as u64)
}

/// Print bytes as Dask does (`1.71 TB`, `7.45 GiB` style with decimal units).
pub fn format_bytes(bytes: u64) -> String {
    let units = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (name, scale) in units {
        if bytes as f64 >= scale * 0.9 {
            return format!("{:.2} {name}", bytes as f64 / scale);
        }
    }
    format!("{bytes} B")
}

/// Parse a duration: `30s`, `10m`, `1h`, `500ms`, `1.5s`, `2d`, or a bare
/// number of seconds (`180`, `0.5`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration '{text}': expected e.g. 30s, 10m, 1h or 500ms"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "invalid duration '{text}': unknown unit '{other}' (use ms, s, m, h or d)"
            ))
        }
    };
    std::time::Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("invalid duration '{text}': out of range"))
}

/// Print a duration as [`parse_duration`] reads it: `3m`, `90s`, `1h`,
/// `1.5s`, `250ms`.
pub fn format_duration(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 || !ms.is_multiple_of(1000) {
        return if ms < 1000 {
            format!("{ms}ms")
        } else {
            format!("{}s", duration.as_secs_f64())
        };
    }
    let secs = duration.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Memory the kernel says is available (`MemAvailable` in /proc/meminfo).
pub fn available_memory() -> Option<u64> {
    meminfo("MemAvailable:")
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The share of the machine's memory `--memory-limit auto` gives the workers
/// of one host together. The limit counts the Arrow buffers of persisted
/// partitions and deliveries; the rest is for what tasks allocate while they
/// run (a partition's sort or group-by works in memory of about its size),
/// allocator slack, the scheduler and the OS (as Dask's default
/// `memory_limit="auto"` divides the machine's memory among its workers).
pub const AUTO_MEMORY_FRACTION: f64 = 0.6;

/// The memory this process may use: the machine's total (`MemTotal`), or
/// the cgroup's limit (`memory.max`, cgroup v2; `memory.limit_in_bytes`,
/// v1: a container's or a systemd unit's `MemoryMax`) when lower.
pub fn memory_budget() -> Option<u64> {
    let total = meminfo("MemTotal:")?;
    let cgroup = cgroup_memory_limit(
        std::fs::read_to_string("/proc/self/cgroup").ok().as_deref(),
        |path| std::fs::read_to_string(path).ok(),
    );
    Some(cgroup.map_or(total, |limit| limit.min(total)))
}

/// `memory_limit = "auto"` for one of `workers` workers on this host.
pub fn auto_memory_limit(workers: u32) -> Option<u64> {
    let budget = memory_budget()? as f64 * AUTO_MEMORY_FRACTION;
    Some((budget / workers.max(1) as f64) as u64)
}

/// The memory limit of this process's cgroup, if it has one: read from the
/// cgroup file system via `read` (a path to its text).
fn cgroup_memory_limit(
    self_cgroup: Option<&str>,
    read: impl Fn(&str) -> Option<String>,
) -> Option<u64> {
    let number = |text: Option<String>| -> Option<u64> {
        let text = text?;
        let text = text.trim();
        (text != "max").then(|| text.parse().ok()).flatten()
    };
    let lines = self_cgroup?;
    // cgroup v2: one line `0::/path`.
    if let Some(path) = lines.lines().find_map(|l| l.strip_prefix("0::")) {
        let path = path.trim_end_matches('/');
        if let Some(limit) = number(read(&format!("/sys/fs/cgroup{path}/memory.max"))) {
            return Some(limit);
        }
    }
    // cgroup v1: the memory controller's line.
    let path = lines.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    let path = path.trim_end_matches('/');
    // v1 reports "no limit" as a huge number.
    number(read(&format!(
        "/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"
    )))
    .filter(|&limit| limit < 1 << 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_are_read_for_v2_and_v1() {
        let files = |path: &str| -> Option<String> {
            match path {
                "/sys/fs/cgroup/system.slice/stratus-worker.service/memory.max" => {
                    Some("8589934592\n".into())
                }
                "/sys/fs/cgroup/user.slice/memory.max" => Some("max\n".into()),
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" => {
                    Some("4294967296\n".into())
                }
                "/sys/fs/cgroup/memory/memory.limit_in_bytes" => {
                    Some("9223372036854771712\n".into())
                }
                _ => None,
            }
        };
        let v2 = Some("0::/system.slice/stratus-worker.service\n");
        assert_eq!(cgroup_memory_limit(v2, files), Some(8 << 30));
        assert_eq!(cgroup_memory_limit(Some("0::/user.slice\n"), files), None);
        let v1 = Some("12:pids:/docker/abc\n4:cpu,memory:/docker/abc\n");
        assert_eq!(cgroup_memory_limit(v1, files), Some(4 << 30));
        assert_eq!(cgroup_memory_limit(Some("4:memory:/\n"), files), None);
        assert_eq!(cgroup_memory_limit(None, files), None);
        // A real machine has a budget, and auto divides it.
        let budget = memory_budget().expect("/proc/meminfo");
        let two = auto_memory_limit(2).unwrap();
        assert!(two > 0 && two as f64 <= budget as f64 * AUTO_MEMORY_FRACTION / 2.0 + 1.0);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("8 parsecs").is_err());
        assert_eq!(format_bytes(1_710_000_000_000), "1.71 TB");
        assert_eq!(format_bytes(12), "12 B");
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("180").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e400s").is_err());
        for text in ["3m", "90s", "1h", "1.5s", "250ms", "0ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
