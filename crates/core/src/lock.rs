//! Lock files that stay correct on a file system shared by many machines (a cluster's NFS or
//! Lustre home): the owner is host + boot + PID, and a lock is only ever taken over when its
//! owner is known to be gone, which only the owner's own host can tell. A lock from another host
//! is waited for, then reported with its owner; never broken.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Who holds a lock (or wrote a temporary file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// The host name; `None` in files written before locks recorded it (then: this host).
    pub host: Option<String>,
    /// The kernel's boot id: the same PID after a reboot is another process.
    pub boot: Option<String>,
}

impl Owner {
    /// This process.
    pub fn me() -> Owner {
        Owner { pid: std::process::id(), host: Some(host_name()), boot: boot_id() }
    }

    /// Parses `PID [HOST [BOOT]]` (one per line or space-separated); older lock files hold the
    /// PID alone.
    pub fn parse(text: &str) -> Option<Owner> {
        let mut parts = text.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        Some(Owner { pid, host: parts.next().map(str::to_string), boot: parts.next().map(str::to_string) })
    }

    /// The lock file's text.
    pub fn to_text(&self) -> String {
        let mut s = self.pid.to_string();
        for part in [&self.host, &self.boot].into_iter().flatten() {
            s.push(' ');
            s.push_str(part);
        }
        s.push('\n');
        s
    }

    /// Whether the owner is known to be gone: on this host, when its process no longer exists or
    /// the host has rebooted since. An owner on another host is never known to be gone.
    pub fn is_gone(&self) -> bool {
        let me = Owner::me();
        if self.host.as_ref().is_some_and(|h| Some(h) != me.host.as_ref()) {
            return false;
        }
        if let (Some(a), Some(b)) = (&self.boot, &me.boot) {
            if a != b {
                return true;
            }
        }
        !process_alive(self.pid)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(h) => write!(f, "process {} on host {h}", self.pid),
            None => write!(f, "process {}", self.pid),
        }
    }
}

/// This machine's name (the kernel's; `HOSTNAME` or `localhost` where it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
        .replace(char::is_whitespace, "_")
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

/// Whether a process of this host is alive (Linux: /proc; elsewhere assume it is, to stay safe).
pub fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// A held lock file; removed on drop.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
}

/// How long a lock-breaking marker may live before it is itself stale (breaking takes
/// microseconds; only a process killed in between leaves one).
const BREAKER_STALE: Duration = Duration::from_secs(30);

/// How old an empty lock file must be before it counts as stale. Since locks are published whole
/// (see [`publish`]), only an older thrive, or a file system without hard links, ever shows an
/// empty one, and only for the microseconds between creating and writing it.
const EMPTY_STALE: Duration = Duration::from_secs(5);

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a > age)
}

/// Tries once to create the lock at `path` holding this process's name. The name is written to a
/// private file first and hard-linked into place (atomic, and safe on NFS), so that a process
/// killed at any instant leaves either no lock or one that names it, never an empty one. Where
/// the file system has no hard links, falls back to create-then-write. Returns whether it took
/// the lock.
fn publish(path: &Path) -> Result<bool> {
    let me = Owner::me();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let private = path.with_file_name(format!(".{name}.{}.{}", me.pid, host_name()));
    std::fs::write(&private, me.to_text()).map_err(|e| Error::io(&private, e))?;
    let linked = std::fs::hard_link(&private, path);
    let _ = std::fs::remove_file(&private);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) => match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(mut f) => {
                f.write_all(me.to_text().as_bytes()).map_err(|e| Error::io(path, e))?;
                let _ = f.sync_all();
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(path, e)),
        },
    }
}

impl FileLock {
    /// Takes the lock at `path` (created with O_EXCL), waiting up to `wait` while another
    /// process holds it. A lock whose owner is gone is taken over; one held by a live process,
    /// or by any process of another host, ends the wait with [`Error::Locked`] naming it.
    pub fn acquire(path: &Path, wait: Duration) -> Result<FileLock> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            if publish(path)? {
                return Ok(FileLock { path: path.to_path_buf() });
            }
            // Held. An empty file is either a lock being written by an older thrive right now
            // (it created the file, then wrote its owner) or one whose writer was killed in
            // between, which nobody could ever name: that one is stale once it is old.
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let owner = Owner::parse(&text);
            let gone = match &owner {
                Some(o) => o.is_gone(),
                None => text.trim().is_empty() && older_than(path, EMPTY_STALE),
            };
            if gone {
                if break_stale(path, &text)? {
                    let who = owner.as_ref().map_or("a process that never wrote its name".into(), |o| o.to_string());
                    tracing::warn!("{}: took over a lock left by {who}, which is gone", path.display());
                }
                continue;
            }
            if started.elapsed() >= wait {
                let holder = owner.map_or("another process".to_string(), |o| o.to_string());
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                    message: format!(
                        "held by {holder} (waited {:.0} s); if that process is gone, delete this lock file",
                        wait.as_secs_f64()
                    ),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the stale lock at `path` if it still holds `seen`. Breakers take turns through a
/// marker file, so that two processes that both saw the stale lock cannot each remove the other's
/// fresh one. Returns whether this process removed it.
fn break_stale(path: &Path, seen: &str) -> Result<bool> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let breaker = path.with_file_name(format!("{name}.breaking"));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&breaker) {
        Ok(_) => {
            let still = std::fs::read_to_string(path).map(|t| t == seen).unwrap_or(false);
            if still {
                let _ = std::fs::remove_file(path);
            }
            let _ = std::fs::remove_file(&breaker);
            Ok(still)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if older_than(&breaker, BREAKER_STALE) {
                let _ = std::fs::remove_file(&breaker);
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(false)
        }
        Err(e) => Err(Error::io(&breaker, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_parse_and_only_local_dead_ones_are_gone() {
        let me = Owner::me();
        assert_eq!(Owner::parse(&me.to_text()), Some(me.clone()));
        assert!(!me.is_gone());
        // An old lock file: the PID alone, meaning this host.
        let old = Owner::parse("4000000000\n").unwrap();
        assert_eq!(old.host, None);
        assert!(old.is_gone());
        // A dead PID on another host is not known to be gone.
        let other = Owner { pid: 4_000_000_000, host: Some("node-elsewhere".into()), boot: None };
        assert!(!other.is_gone());
        // This host after a reboot: gone whatever the PID.
        let rebooted = Owner { pid: std::process::id(), host: me.host.clone(), boot: Some("another-boot".into()) };
        assert_eq!(rebooted.is_gone(), me.boot.is_some());
    }

    #[test]
    fn locks_wait_take_over_dead_owners_and_never_break_other_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let held = FileLock::acquire(&path, Duration::ZERO).unwrap();
        let err = FileLock::acquire(&path, Duration::from_millis(50)).unwrap_err().to_string();
        assert!(err.contains(".lock") && err.contains(&std::process::id().to_string()), "{err}");
        drop(held);
        assert!(!path.exists());
        std::fs::write(&path, "4000000000\n").unwrap();
        drop(FileLock::acquire(&path, Duration::ZERO).unwrap());
        std::fs::write(&path, "4000000000 node-elsewhere\n").unwrap();
        let err = FileLock::acquire(&path, Duration::from_millis(20)).unwrap_err().to_string();
        assert!(err.contains("node-elsewhere"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4000000000 node-elsewhere\n");
    }

    #[test]
    fn an_empty_lock_is_waited_for_while_fresh_and_taken_over_once_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.lock");
        // A writer killed between creating the file and naming itself.
        std::fs::write(&path, "").unwrap();
        let err = FileLock::acquire(&path, Duration::from_millis(20)).unwrap_err().to_string();
        assert!(err.contains("another process"), "{err}");
        let old = std::time::SystemTime::now() - EMPTY_STALE - Duration::from_secs(1);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        let held = FileLock::acquire(&path, Duration::ZERO).unwrap();
        assert_eq!(Owner::parse(&std::fs::read_to_string(&path).unwrap()), Some(Owner::me()));
        drop(held);
        // Publishing leaves no private file behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
