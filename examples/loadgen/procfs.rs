//! CPU time and memory of processes, read from Linux's /proc.
//!
//! The load generator reports its own CPU time so a reader can check that it
//! was not the bottleneck, and, given `--server-pid`, the server's CPU time
//! and memory. Servers such as Dovecot are a tree of processes (master,
//! login, auth, one or more mail processes), so the figures cover the given
//! process and all its descendants. Memory is reported both as RSS (what
//! `ps` shows; counts shared pages once per process) and PSS (shared pages
//! divided among their sharers, the fair figure for a process tree).

use std::collections::HashMap;
use std::fs;

/// Clock ticks per second in /proc/<pid>/stat. Linux fixes USER_HZ at 100
/// for this interface on every architecture we run on; reading it through
/// sysconf would need libc for one constant.
const USER_HZ: f64 = 100.0;

/// A process's CPU time in seconds: user + system, plus that of its waited-for
/// children (so short-lived helper processes that already exited count).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields
    // are counted from after its closing parenthesis (field 3, "state").
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime, stime, cutime, cstime are fields 14..=17, i.e. 11..=14 here.
    let ticks = tick(11)? + tick(12)? + tick(13)? + tick(14)?;
    Some(ticks as f64 / USER_HZ)
}

/// The 1-minute load average of the host. Benchmarks on a shared machine
/// are only as good as the machine was quiet; this says how quiet it was.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `pid` and all its descendants, found through the parent field of
/// every process's stat file.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let parent = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 2..)?.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(parent) = parent {
                children.entry(parent).or_default().push(child);
            }
        }
    }
    let mut tree = vec![pid];
    let mut next = 0;
    while next < tree.len() {
        if let Some(kids) = children.get(&tree[next]) {
            tree.extend(kids);
        }
        next += 1;
    }
    tree
}

/// The first "<key>: <n> kB" value of a /proc file, in KiB.
fn kib_field(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A snapshot of a server process tree.
#[derive(Clone, Copy, Debug, Default)]
pub struct TreeSample {
    /// Processes in the tree: a multi-process server forks per connection
    /// or per batch of connections, and that is worth seeing.
    pub processes: usize,
    /// Sum of VmRSS, KiB.
    pub rss_kib: u64,
    /// Sum of Pss from smaps_rollup, KiB (0 if the kernel hides it).
    pub pss_kib: u64,
    /// Sum of CPU seconds (see [`cpu_seconds`]).
    pub cpu_s: f64,
}

pub fn sample_tree(pid: u32) -> Option<TreeSample> {
    // The root must exist; descendants may vanish while we read them.
    cpu_seconds(&pid.to_string())?;
    let mut sample = TreeSample::default();
    for member in process_tree(pid) {
        let Some(cpu) = cpu_seconds(&member.to_string()) else {
            continue;
        };
        sample.processes += 1;
        sample.cpu_s += cpu;
        sample.rss_kib += kib_field(&format!("/proc/{member}/status"), "VmRSS:").unwrap_or(0);
        sample.pss_kib += kib_field(&format!("/proc/{member}/smaps_rollup"), "Pss:").unwrap_or(0);
    }
    Some(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        let sample = sample_tree(pid).unwrap();
        assert!(sample.processes >= 1);
        assert!(sample.rss_kib > 0);
        assert!(cpu_seconds("self").is_some());
        assert!(load_average().is_some_and(|l| l >= 0.0));
        assert!(process_tree(pid).contains(&pid));
    }
}
