//! Snapshots kept between sessions, so a login to an unchanged maildir
//! neither lists its directories nor sizes its files again.
//!
//! A snapshot depends on the names in `cur/` and `new/` and, for UIDLs
//! taken from `dovecot-uidlist`, on files in the maildir itself. Adding,
//! removing or renaming a file (every change a deliverer, an IMAP server or
//! a pop3d UPDATE makes; `dovecot-uidlist` is replaced by a rename) sets the
//! directory's mtime. So a snapshot is reused while those mtimes are what
//! they were before it was listed, and only when its sizes came from the
//! files' names: a file rewritten in place changes no directory.
//!
//! File systems keep mtimes at a coarse grain (ext4 by the kernel tick,
//! some by the second), so a change made just after a listing can leave the
//! mtime as it was. A snapshot is therefore only kept when every mtime it
//! was checked against is older than [`SETTLED_AFTER`] at the time of the
//! listing: any later change must then carry a newer mtime.

use crate::snapshot::MessageFile;
use pop3d_plugin_api::MessageInfo;
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old a directory's mtime must be for a listing of it to be kept:
/// longer than the coarsest mtime grain in use (one second) plus clock
/// steps between the kernel's coarse and fine clocks.
const SETTLED_AFTER: Duration = Duration::from_secs(2);

/// The messages of a maildir as one session found them; shared by the
/// sessions that reuse it, never changed.
#[derive(Debug, Default)]
pub(crate) struct SharedSnapshot {
    /// Sizes and unique ids, in message-number order.
    pub(crate) messages: Vec<MessageInfo>,
    /// The file behind each message, same order.
    pub(crate) files: Vec<MessageFile>,
}

/// A directory's modification time, to nanoseconds; `None` when it does
/// not exist.
pub(crate) type DirTime = Option<(i64, i64)>;

/// The mtime of a directory from its metadata.
pub(crate) fn dir_time(metadata: &Metadata) -> DirTime {
    Some((metadata.mtime(), metadata.mtime_nsec()))
}

/// What a snapshot was checked against: the mtimes of `cur/`, `new/` and,
/// when UIDLs come from files in the maildir, of the maildir itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListingStamp {
    pub(crate) cur: DirTime,
    pub(crate) new: DirTime,
    pub(crate) maildir: DirTime,
}

impl ListingStamp {
    /// Whether every mtime is old enough, at `listed_at`, that a later
    /// change cannot carry the same one.
    fn settled_at(&self, listed_at: SystemTime) -> bool {
        let Ok(listed) = listed_at.duration_since(UNIX_EPOCH) else {
            return false;
        };
        let Some(limit) = listed.checked_sub(SETTLED_AFTER) else {
            return false;
        };
        [self.cur, self.new, self.maildir]
            .into_iter()
            .flatten()
            .all(|(seconds, nanos)| {
                u64::try_from(seconds).is_ok_and(|seconds| {
                    Duration::new(seconds, u32::try_from(nanos).unwrap_or(u32::MAX)) < limit
                })
            })
    }
}

/// One kept snapshot.
#[derive(Debug)]
struct Kept {
    stamp: ListingStamp,
    snapshot: Arc<SharedSnapshot>,
}

/// Snapshots by maildir path, holding at most a budget of messages in all.
#[derive(Debug)]
pub(crate) struct ListingCache {
    /// The most messages all kept snapshots may hold together (0: none).
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    kept: HashMap<PathBuf, Kept>,
    /// Messages in `kept`, against `budget`.
    messages: usize,
}

impl ListingCache {
    pub(crate) fn new(budget: usize) -> ListingCache {
        ListingCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Locks the table, ignoring poisoning: every change is a single
    /// insert or remove with its count, so a panic cannot leave it torn.
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The kept snapshot of `maildir`, if its directories are as they were.
    pub(crate) fn get(&self, maildir: &Path, stamp: &ListingStamp) -> Option<Arc<SharedSnapshot>> {
        if self.budget == 0 {
            return None;
        }
        let inner = self.inner();
        let kept = inner.kept.get(maildir)?;
        (kept.stamp == *stamp).then(|| Arc::clone(&kept.snapshot))
    }

    /// Forgets what was kept for `maildir`: its new listing may not be
    /// reused (some size needed a look at a file).
    pub(crate) fn forget(&self, maildir: &Path) {
        if self.budget == 0 {
            return;
        }
        let mut inner = self.inner();
        if let Some(old) = inner.kept.remove(maildir) {
            inner.messages -= old.snapshot.messages.len();
        }
    }

    /// Keeps `snapshot` of `maildir`, listed at `listed_at` after `stamp`
    /// was taken, if it may be reused; else forgets what was kept for it.
    pub(crate) fn offer(
        &self,
        maildir: &Path,
        stamp: ListingStamp,
        listed_at: SystemTime,
        snapshot: &Arc<SharedSnapshot>,
    ) {
        if self.budget == 0 {
            return;
        }
        let mut inner = self.inner();
        if let Some(old) = inner.kept.remove(maildir) {
            inner.messages -= old.snapshot.messages.len();
        }
        let size = snapshot.messages.len();
        if !stamp.settled_at(listed_at) || size > self.budget {
            return;
        }
        // Make room by dropping others, in no particular order: which
        // maildirs log in next is not known, and a miss costs one listing.
        while inner.messages + size > self.budget {
            let Some(victim) = inner.kept.keys().next().cloned() else {
                break;
            };
            if let Some(old) = inner.kept.remove(&victim) {
                inner.messages -= old.snapshot.messages.len();
            }
        }
        inner.messages += size;
        inner.kept.insert(
            maildir.to_path_buf(),
            Kept {
                stamp,
                snapshot: Arc::clone(snapshot),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_of(count: usize) -> Arc<SharedSnapshot> {
        Arc::new(SharedSnapshot {
            messages: (0..count)
                .map(|i| MessageInfo {
                    wire_size: 1,
                    uid: format!("u{i}"),
                })
                .collect(),
            files: Vec::new(),
        })
    }

    fn stamp_at(seconds: i64) -> ListingStamp {
        ListingStamp {
            cur: Some((seconds, 0)),
            new: Some((seconds, 5)),
            maildir: None,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn reused_only_while_the_directories_are_unchanged() {
        let cache = ListingCache::new(100);
        let path = Path::new("/m/alice");
        cache.offer(path, stamp_at(1000), at(1010), &snapshot_of(3));
        assert_eq!(cache.get(path, &stamp_at(1000)).unwrap().messages.len(), 3);
        assert!(cache.get(path, &stamp_at(1001)).is_none());
        assert!(cache.get(Path::new("/m/bob"), &stamp_at(1000)).is_none());
    }

    #[test]
    fn a_listing_right_after_a_change_is_not_kept() {
        let cache = ListingCache::new(100);
        let path = Path::new("/m/alice");
        // The directory changed one second before the listing: a change
        // in the same grain after it could keep the same mtime.
        cache.offer(path, stamp_at(1000), at(1001), &snapshot_of(3));
        assert!(cache.get(path, &stamp_at(1000)).is_none());
        // And a fresh listing replaces what was kept before.
        cache.offer(path, stamp_at(900), at(1000), &snapshot_of(2));
        cache.offer(path, stamp_at(1000), at(1001), &snapshot_of(3));
        assert!(cache.get(path, &stamp_at(900)).is_none());
    }

    #[test]
    fn the_budget_bounds_the_messages_kept() {
        let cache = ListingCache::new(10);
        for user in 0..20 {
            let path = PathBuf::from(format!("/m/{user}"));
            cache.offer(&path, stamp_at(1000), at(1010), &snapshot_of(4));
        }
        let kept = (0..20)
            .filter(|user| {
                let path = PathBuf::from(format!("/m/{user}"));
                cache.get(&path, &stamp_at(1000)).is_some()
            })
            .count();
        assert_eq!(kept, 2);
        assert!(cache.inner().messages <= 10);
        // Too big on its own: not kept at all.
        cache.offer(
            Path::new("/m/big"),
            stamp_at(1000),
            at(1010),
            &snapshot_of(11),
        );
        assert!(cache.get(Path::new("/m/big"), &stamp_at(1000)).is_none());
        // A budget of zero keeps nothing.
        let off = ListingCache::new(0);
        off.offer(Path::new("/m/a"), stamp_at(1000), at(1010), &snapshot_of(1));
        assert!(off.get(Path::new("/m/a"), &stamp_at(1000)).is_none());
    }
}
