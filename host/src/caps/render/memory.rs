//! Chromium's memory, bounded per page: a watch over the browser's process
//! tree that kills a page's renderer process once its resident memory is
//! past `--render-page-mib`.
//!
//! Chromium is a child of the host but not a wasm guest: the memory budget
//! (`--memory-budget-mib`) does not see it, and a page that allocated
//! 1.5 GiB took the process tree to 3,870 MiB (the hostile probe). V8's
//! heap limit alone would not do (array buffers, canvases and images live
//! outside it), nor an address-space limit (Chromium reserves terabytes
//! of it), and cgroups are not everywhere spike runs; reading each
//! process's resident set from `/proc` a few times a second is. A page is
//! one renderer process (each render has a browser context of its own);
//! the browser, GPU and utility processes are never killed here. The
//! render whose page was killed is told so (`Killed`), and the context is
//! disposed of as after any render.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;

/// How often the renderers' memory is read, and how often the process
/// tree (to find new renderers): a page that allocates as fast as it can
/// (gigabytes a second) is seen within `CHECK_EVERY` of passing its limit.
const CHECK_EVERY: Duration = Duration::from_millis(50);
const SCAN_EVERY: u32 = 5;

/// Renderer processes killed so far, counted by the watch; a render
/// compares before and after.
pub type Killed = watch::Receiver<u64>;

/// Watches the process tree of the browser `browser_pid` until every
/// receiver is gone (or the browser is); the count of pages killed goes to
/// the receivers, and to `counted`.
pub fn watch(
    browser_pid: u32,
    limit_bytes: u64,
    counted: prometheus_client::metrics::counter::Counter,
) -> Killed {
    let (tx, rx) = watch::channel(0);
    // A thread of its own, not the runtime's: it reads files and sleeps,
    // and must not hold the runtime's shutdown.
    let spawned = std::thread::Builder::new()
        .name("spike-render-memory".into())
        .spawn(move || {
            let mut renderers: Vec<u32> = Vec::new();
            // Killed, and not to be killed again while they exit.
            let mut killed: Vec<u32> = Vec::new();
            for round in 0u32.. {
                if tx.is_closed() || !alive(browser_pid) {
                    return;
                }
                if round % SCAN_EVERY == 0 {
                    let tree = descendants(browser_pid);
                    renderers.retain(|pid| tree.contains(pid));
                    killed.retain(|pid| tree.contains(pid));
                    // Every other process is looked at again each scan: a
                    // renderer forked from the zygote shows its
                    // `--type=renderer` only once it has rewritten its
                    // command line, and one seen before that (a loaded
                    // machine: the cold CI run) escaped its limit for good
                    // when a first look was final.
                    for pid in tree {
                        if !renderers.contains(&pid) && !killed.contains(&pid) && is_renderer(pid) {
                            renderers.push(pid);
                        }
                    }
                }
                renderers.retain(|&pid| {
                    let Some(rss) = resident_bytes(pid) else {
                        return true;
                    };
                    if rss > limit_bytes {
                        tracing::warn!(
                            pid,
                            mib = rss >> 20,
                            limit_mib = limit_bytes >> 20,
                            "render: a page is past its memory limit (--render-page-mib): stopped"
                        );
                        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                            let _ =
                                rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                        }
                        counted.inc();
                        tx.send_modify(|n| *n += 1);
                        killed.push(pid);
                        return false;
                    }
                    true
                });
                std::thread::sleep(CHECK_EVERY);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("render: watching Chromium's memory: {e}");
    }
    rx
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Every process below `root` (its children, theirs, ...).
fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        if let Some(kids) = children.remove(&pid) {
            found.extend(&kids);
            next.extend(kids);
        }
    }
    found
}

/// The parent of `pid`, from `/proc/<pid>/stat` (its fourth field, after
/// the command in parentheses, which may hold spaces).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is one of Chromium's renderer processes (a page). Its
/// command line is searched as a whole: Chromium rewrites it (its process
/// title), arguments separated by spaces rather than NULs.
fn is_renderer(pid: u32) -> bool {
    const FLAG: &[u8] = b"--type=renderer";
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(FLAG.len()).any(|w| w == FLAG))
}

/// The resident memory of `pid` (`VmRSS` in `/proc/<pid>/status`).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = (status.lines())
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_tree_is_read_from_proc() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = descendants(me);
        assert!(tree.contains(&child.id()), "{tree:?}");
        assert_eq!(parent_of(child.id()), Some(me));
        assert!(!is_renderer(child.id()));
        assert!(resident_bytes(me).is_some_and(|b| b > 0));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
