//! The snapshot a session works on: which files are messages, in which
//! order, how big they are on the wire, and their unique ids.

use crate::io_failure;
use crate::maildrop::open_regular_file;
use crate::uidl::{Cutoff, DovecotUidlist, UidlFormat, UidlValues};
use pop3d_plugin_api::{log_error, log_info, log_warn, wire_size_of_reader, Error, MessageInfo};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The wire-size cache inside a maildir.
pub(crate) const SIZE_CACHE_NAME: &str = "pop3d-sizes";
/// The first line of the size cache; a file with another first line is
/// ignored, so the format can change without misreading old files.
const SIZE_CACHE_HEADER: &str = "pop3d-sizes 1";
/// Longest unique id POP3 allows (RFC 1939, section 7).
const MAX_UID_LEN: usize = 70;

/// One message file of the snapshot, as needed to find it again.
#[derive(Debug, Clone)]
pub(crate) struct MessageFile {
    /// The file name up to the first `:`; stays the same when another
    /// program moves the file to `cur/` or changes its flags.
    pub(crate) base: Vec<u8>,
    /// Where the file was last seen.
    pub(crate) path: PathBuf,
    /// Its size in bytes as Maildir++ quotas count it (`,S=` in the name,
    /// else the file's size), for the `maildirsize` line of a deletion.
    pub(crate) quota_size: u64,
}

/// What [`take_snapshot`] found.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Sizes and unique ids, in message-number order.
    pub(crate) messages: Vec<MessageInfo>,
    /// The file behind each entry of `messages`.
    pub(crate) files: Vec<MessageFile>,
    /// How many files had to be read to learn their size (for the log).
    pub(crate) sizes_computed: usize,
    /// Whether every size came from a file's name (`,S=` and `,W=`) and the
    /// cache, with no `stat` of a file: then nothing but a change to a
    /// directory can change this snapshot, which is what lets a later
    /// session reuse it (see [`crate::listing_cache`]).
    pub(crate) sized_by_names_only: bool,
}

/// A file found in `cur/` or `new/`, before it is sized.
#[derive(Debug)]
struct Found {
    /// Seconds at the start of the name, for ordering by delivery time.
    delivered: u64,
    /// The name up to the first `:`.
    base: Vec<u8>,
    /// The full file name, to break ties deterministically.
    name: Vec<u8>,
    /// Where it is; its `metadata` is a `stat` relative to the open
    /// directory, cheaper than one by full path.
    dir_entry: fs::DirEntry,
}

/// Lists, orders, sizes and names the messages of an existing maildir,
/// with UIDLs made by `uidl_format`.
pub(crate) fn take_snapshot(maildir: &Path, uidl_format: &UidlFormat) -> Result<Snapshot, Error> {
    let mut found = Vec::new();
    let mut seen_bases = HashSet::new();
    // `cur/` before `new/`: a file moved from `new/` to `cur/` between the
    // two listings is then missed (it shows up next session) rather than
    // listed twice.
    for subdir in ["cur", "new"] {
        for (name, dir_entry) in list_message_files(&maildir.join(subdir))? {
            let base = base_name(&name).to_vec();
            if seen_bases.insert(base.clone()) {
                found.push(Found {
                    delivered: delivery_time(&base),
                    base,
                    name,
                    dir_entry,
                });
            }
        }
    }
    found.sort_by(|a, b| (a.delivered, &a.base, &a.name).cmp(&(b.delivered, &b.base, &b.name)));

    let listed = found.len();
    let mut cache = SizeCache::load(maildir);
    let mut sizes_computed = 0;
    let mut sized_by_names = 0;
    let mut files = Vec::with_capacity(found.len());
    let mut wire_sizes = Vec::with_capacity(found.len());
    for entry in found {
        let (wire_size, file_len) = {
            match size_from_cache_or_file(&entry, &mut cache) {
                Ok(Sized {
                    wire_size,
                    file_len,
                    how,
                }) => {
                    sizes_computed += usize::from(how == SizedBy::ReadingTheFile);
                    sized_by_names += usize::from(how == SizedBy::Name);
                    (wire_size, file_len)
                }
                // Deleted by another program since the listing: it is
                // simply not part of this snapshot.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => {
                    // One unreadable file should not lock the user out of
                    // the rest of their mail; the operator learns of it here.
                    log_error!(
                        "maildir: leaving {} out of the maildrop: cannot read it: {err}",
                        entry.dir_entry.path().display()
                    );
                    continue;
                }
            }
        };
        wire_sizes.push(wire_size);
        files.push(MessageFile {
            quota_size: size_hint(&entry.base, b",S=").unwrap_or(file_len),
            base: entry.base,
            path: entry.dir_entry.path(),
        });
    }
    cache.save_if_changed(maildir);

    let candidates = uidl_candidates(maildir, uidl_format, &files)?;
    let candidates: Vec<&[u8]> = candidates.iter().map(Vec::as_slice).collect();
    let messages = unique_ids(&candidates)
        .into_iter()
        .zip(wire_sizes)
        .map(|(uid, wire_size)| MessageInfo { wire_size, uid })
        .collect();
    Ok(Snapshot {
        sized_by_names_only: sized_by_names == listed && sized_by_names == files.len(),
        messages,
        files,
        sizes_computed,
    })
}

/// The regular, non-hidden files of `dir` (names and entries). A missing
/// directory has none.
pub(crate) fn list_message_files(dir: &Path) -> Result<Vec<(Vec<u8>, fs::DirEntry)>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_failure(&format!("cannot list {}", dir.display()), &err)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|err| io_failure(&format!("cannot list {}", dir.display()), &err))?;
        let name = entry.file_name().into_vec();
        if name.starts_with(b".") {
            continue;
        }
        // Symlinks are skipped too (file_type does not follow them): a link
        // to a file outside the maildir must not be served as mail.
        match entry.file_type() {
            Ok(file_type) if file_type.is_file() => files.push((name, entry)),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(io_failure(
                    &format!("cannot inspect {}", entry.path().display()),
                    &err,
                ))
            }
        }
    }
    Ok(files)
}

/// The part of a maildir file name before the flags (`:2,S`).
pub(crate) fn base_name(name: &[u8]) -> &[u8] {
    match name.iter().position(|&byte| byte == b':') {
        Some(colon) => &name[..colon],
        None => name,
    }
}

/// The delivery time in seconds that maildir names start with; names that
/// do not start with digits sort after all others.
fn delivery_time(base: &[u8]) -> u64 {
    let digits = base.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return u64::MAX;
    }
    base[..digits].iter().fold(0u64, |seconds, digit| {
        seconds
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    })
}

/// The `,W=<n>` size in a base name: the size with CRLF line ends, which
/// Dovecot and other Maildir++ deliverers record at delivery.
///
/// Dovecot's W= does not count the CRLF pop3d sends after a last line
/// without a newline, so the caller checks the file's last byte once (and
/// caches the result) instead of trusting the hint alone.
fn wire_size_hint(base: &[u8]) -> Option<u64> {
    size_hint(base, b",W=")
}

/// The number after `field` (`,W=` or `,S=`) in a base name, if there is a
/// well-formed one.
fn size_hint(base: &[u8], field: &[u8; 3]) -> Option<u64> {
    let mut rest = base;
    while let Some(start) = rest.windows(3).position(|window| window == field) {
        let after = &rest[start + 3..];
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        let ends_cleanly = after.get(digits).is_none_or(|&b| b == b',');
        if digits > 0 && ends_cleanly {
            let text = std::str::from_utf8(&after[..digits]).ok()?;
            return text.parse().ok();
        }
        rest = after;
    }
    None
}

/// How [`size_from_cache_or_file`] learned a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizedBy {
    /// The name's `,S=` and `,W=` and the cache: no system call.
    Name,
    /// The cache, after a `stat` showed the file unchanged.
    StampedCache,
    /// Reading the file (then cached).
    ReadingTheFile,
}

/// A message file's sizes.
struct Sized {
    /// Octets on the wire (CRLF line ends, before dot-stuffing).
    wire_size: u64,
    /// Bytes in the file.
    file_len: u64,
    how: SizedBy,
}

/// The wire size of `entry`, from the cache when the file's size and mtime
/// match, else by reading the file (and then cached).
fn size_from_cache_or_file(entry: &Found, cache: &mut SizeCache) -> io::Result<Sized> {
    // Maildir files are never rewritten in place, and a name carrying both
    // `,S=` and `,W=` was given by a deliverer that measured the file. For
    // those the cache is trusted on the name alone: a login then costs no
    // `stat` per message, which is most of its time in a large maildrop.
    if let (Some(wire_hint), Some(file_len)) =
        (wire_size_hint(&entry.base), size_hint(&entry.base, b",S="))
    {
        if let Some(wire_size) = cache.lookup_named(&entry.base, file_len, wire_hint) {
            return Ok(Sized {
                wire_size,
                file_len,
                how: SizedBy::Name,
            });
        }
    }
    // Does not follow symlinks, like `fs::symlink_metadata`.
    let metadata = entry.dir_entry.metadata()?;
    let stamp = FileStamp::of(&metadata);
    if let Some(wire_size) = cache.lookup(&entry.base, stamp) {
        return Ok(Sized {
            wire_size,
            file_len: metadata.len(),
            how: SizedBy::StampedCache,
        });
    }
    let mut file = open_regular_file(&entry.dir_entry.path())?;
    let wire_size = match wire_size_hint(&entry.base) {
        Some(hint) => hint + unterminated_last_line_extra(&mut file, metadata.len())?,
        None => wire_size_of_reader(file)?,
    };
    cache.insert(&entry.base, stamp, wire_size);
    Ok(Sized {
        wire_size,
        file_len: metadata.len(),
        how: SizedBy::ReadingTheFile,
    })
}

/// The CRLF the wire adds after a non-empty message whose last byte is not a
/// LF: 2 octets, or 0. Reads one byte.
fn unterminated_last_line_extra(file: &mut File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    file.seek(io::SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(if last[0] == b'\n' { 0 } else { 2 })
}

/// The UIDL each file would get by `uidl_format`, before
/// [`unique_ids`] makes them valid and distinct. See [`crate::uidl`] for
/// which messages take their values from `dovecot-uidlist`.
fn uidl_candidates(
    maildir: &Path,
    uidl_format: &UidlFormat,
    files: &[MessageFile],
) -> Result<Vec<Vec<u8>>, Error> {
    if uidl_format.is_base_name() || files.is_empty() {
        return Ok(files.iter().map(|file| file.base.clone()).collect());
    }
    let uidlist = if uidl_format.needs_uidlist() {
        DovecotUidlist::read(maildir)?
    } else {
        None
    };
    let cutoff = Cutoff::read(maildir);
    if let (Some(list), Some(cutoff)) = (&uidlist, &cutoff) {
        if list.uid_validity != cutoff.uid_validity && cutoff.next_uid > 0 {
            log_warn!(
                "maildir: {}: dovecot-uidlist has UIDVALIDITY {}, but pop3d started from {}; \
                 Dovecot's UIDs are not used (messages keep their base names as UIDLs)",
                maildir.display(),
                list.uid_validity,
                cutoff.uid_validity
            );
        }
    }
    // The record Dovecot has for a base name, if pop3d may use it: before
    // any cutoff, every record; after, only those numbered before it.
    let record_of = |base: &[u8]| {
        let list = uidlist.as_ref()?;
        let record = list.records.get(base)?;
        match &cutoff {
            None => Some(record),
            Some(cutoff) => (list.uid_validity == cutoff.uid_validity
                && record.uid < cutoff.next_uid)
                .then_some(record),
        }
    };
    let mut showed_a_fallback = false;
    let candidates = files
        .iter()
        .map(|file| match record_of(&file.base) {
            Some(record) => match &record.pop3_uidl {
                Some(saved) => saved.as_bytes().to_vec(),
                None => uidl_format.expand(&UidlValues {
                    base: &file.base,
                    dovecot: uidlist.as_ref().map(|list| (record.uid, list.uid_validity)),
                    guid: record.guid.as_deref(),
                }),
            },
            None => {
                showed_a_fallback = true;
                uidl_format.expand(&UidlValues {
                    base: &file.base,
                    dovecot: None,
                    guid: None,
                })
            }
        })
        .collect();
    if showed_a_fallback && cutoff.is_none() {
        // A message Dovecot has not numbered is shown with its base name.
        // Should Dovecot number it later, it must keep that name: from now
        // on only the UIDs Dovecot has handed out so far count.
        let pinned = uidlist.as_ref().map_or(
            Cutoff {
                uid_validity: 0,
                next_uid: 0,
            },
            |list| Cutoff {
                uid_validity: list.uid_validity,
                next_uid: list.next_uid,
            },
        );
        pinned.write(maildir)?;
        log_info!(
            "maildir: {}: a message Dovecot has not numbered gets its base name as UIDL; from \
             now on only Dovecot's UIDs below {} (UIDVALIDITY {}) are used, so no UIDL changes \
             later ({})",
            maildir.display(),
            pinned.next_uid,
            pinned.uid_validity,
            crate::uidl::CUTOFF_FILE_NAME
        );
    }
    Ok(candidates)
}

/// What the size cache remembers of a file to know it has not changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    /// Size in bytes.
    size: u64,
    /// Modification time, seconds since the epoch.
    mtime_seconds: i64,
    /// Modification time, nanoseconds within the second.
    mtime_nanos: i64,
}

impl FileStamp {
    fn of(metadata: &fs::Metadata) -> FileStamp {
        FileStamp {
            size: metadata.len(),
            mtime_seconds: metadata.mtime(),
            mtime_nanos: metadata.mtime_nsec(),
        }
    }
}

/// The per-maildir cache of computed wire sizes (`pop3d-sizes`).
///
/// Format, one line each after the header line `pop3d-sizes 1`:
/// `<base name> <file size> <mtime seconds>.<mtime nanoseconds> <wire size>`.
/// Only base names of printable ASCII without spaces are cached. A file
/// that does not parse is ignored as a whole (and rewritten): the cache is
/// only ever an optimisation.
#[derive(Debug, Default)]
struct SizeCache {
    /// Entries read from the file, by base name.
    loaded: HashMap<Vec<u8>, (FileStamp, u64)>,
    /// Entries for the files of this snapshot, to be written back.
    current: Vec<(Vec<u8>, FileStamp, u64)>,
    /// Whether `current` differs from what the file holds.
    changed: bool,
}

impl SizeCache {
    fn load(maildir: &Path) -> SizeCache {
        let path = maildir.join(SIZE_CACHE_NAME);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    log_warn!("maildir: ignoring size cache {}: {err}", path.display());
                }
                return SizeCache::default();
            }
        };
        match parse_size_cache(&text) {
            Some(loaded) => SizeCache {
                loaded,
                ..SizeCache::default()
            },
            None => {
                log_warn!(
                    "maildir: ignoring corrupt size cache {}; it will be rewritten",
                    path.display()
                );
                SizeCache {
                    changed: true,
                    ..SizeCache::default()
                }
            }
        }
    }

    fn lookup(&mut self, base: &[u8], stamp: FileStamp) -> Option<u64> {
        match self.loaded.get(base) {
            Some(&(cached_stamp, wire_size)) if cached_stamp == stamp => {
                self.current.push((base.to_vec(), stamp, wire_size));
                Some(wire_size)
            }
            _ => None,
        }
    }

    /// The cached wire size of a file whose name gives its size and wire
    /// size, without a `stat`: the entry must agree with the name (the same
    /// file size, and the `,W=` size or that plus the CRLF pop3d adds after
    /// an unterminated last line).
    fn lookup_named(&mut self, base: &[u8], file_len: u64, wire_hint: u64) -> Option<u64> {
        let &(stamp, wire_size) = self.loaded.get(base)?;
        let agrees =
            stamp.size == file_len && (wire_size == wire_hint || wire_size == wire_hint + 2);
        if !agrees {
            return None;
        }
        self.current.push((base.to_vec(), stamp, wire_size));
        Some(wire_size)
    }

    fn insert(&mut self, base: &[u8], stamp: FileStamp, wire_size: u64) {
        if is_valid_uid(base) {
            self.current.push((base.to_vec(), stamp, wire_size));
            self.changed = true;
        }
    }

    /// Writes the cache back if it gained, lost or changed entries. Written
    /// to a temporary file and renamed, so a reader never sees half a file;
    /// a failure only costs speed, so it is logged and otherwise ignored.
    fn save_if_changed(&self, maildir: &Path) {
        if !self.changed && self.current.len() == self.loaded.len() {
            return;
        }
        let mut text = Vec::with_capacity(SIZE_CACHE_HEADER.len() + 64 * self.current.len());
        text.extend_from_slice(SIZE_CACHE_HEADER.as_bytes());
        text.push(b'\n');
        for (base, stamp, wire_size) in &self.current {
            text.extend_from_slice(base);
            text.extend_from_slice(
                format!(
                    " {} {}.{:09} {wire_size}\n",
                    stamp.size, stamp.mtime_seconds, stamp.mtime_nanos
                )
                .as_bytes(),
            );
        }
        let final_path = maildir.join(SIZE_CACHE_NAME);
        let temporary_path = maildir.join(format!("{SIZE_CACHE_NAME}.tmp"));
        let written = File::create(&temporary_path)
            .and_then(|mut file| file.write_all(&text))
            .and_then(|()| fs::rename(&temporary_path, &final_path));
        if let Err(err) = written {
            let _ = fs::remove_file(&temporary_path);
            log_warn!(
                "maildir: cannot write size cache {}: {err}; sizes will be recomputed next time",
                final_path.display()
            );
        }
    }
}

/// The entries of a size cache file, or `None` if it is not one.
fn parse_size_cache(text: &[u8]) -> Option<HashMap<Vec<u8>, (FileStamp, u64)>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.lines();
    if lines.next()? != SIZE_CACHE_HEADER {
        return None;
    }
    let mut entries = HashMap::new();
    for line in lines {
        let mut fields = line.split(' ');
        let base = fields.next()?;
        let size = fields.next()?.parse().ok()?;
        let (seconds, nanos) = fields.next()?.split_once('.')?;
        let wire_size = fields.next()?.parse().ok()?;
        if fields.next().is_some() || !is_valid_uid(base.as_bytes()) {
            return None;
        }
        let stamp = FileStamp {
            size,
            mtime_seconds: seconds.parse().ok()?,
            mtime_nanos: nanos.parse().ok()?,
        };
        entries.insert(base.as_bytes().to_vec(), (stamp, wire_size));
    }
    Some(entries)
}

/// Whether `bytes` can be a POP3 unique id as is: 1 to 70 octets in
/// 0x21..=0x7E (RFC 1939, section 7).
pub(crate) fn is_valid_uid(bytes: &[u8]) -> bool {
    (1..=MAX_UID_LEN).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7E).contains(b))
}

/// The unique ids of messages with these UIDL candidates (base names, or
/// what `uidl_format` made of them), in the same order.
///
/// A candidate that is a valid POP3 unique id, and the first of its kind,
/// is used as is. Any other (too long, with spaces or non-ASCII bytes, or a
/// repeat of an earlier one) gets the 64-bit FNV-1a hash of its bytes as 16
/// lowercase hex digits. Should that collide with another message's id, the
/// hash is taken again over the name followed by a 0xFF byte and a counter
/// (1, 2, ...) until it is free; valid names claim their ids first and
/// digests are assigned in message order, so the result depends only on
/// the list of candidates.
pub fn unique_ids(bases: &[&[u8]]) -> Vec<String> {
    let mut taken: HashSet<String> = bases
        .iter()
        .filter(|base| is_valid_uid(base))
        .map(|base| String::from_utf8_lossy(base).into_owned())
        .collect();
    let mut claimed: HashSet<&[u8]> = HashSet::new();
    bases
        .iter()
        .map(|&base| {
            if is_valid_uid(base) && claimed.insert(base) {
                return String::from_utf8_lossy(base).into_owned();
            }
            let mut attempt: u64 = 0;
            loop {
                let mut hash = Fnv1a64::new();
                hash.write(base);
                if attempt > 0 {
                    hash.write(&[0xFF]);
                    hash.write(&attempt.to_le_bytes());
                }
                let candidate = format!("{:016x}", hash.finish());
                if taken.insert(candidate.clone()) {
                    return candidate;
                }
                attempt += 1;
            }
        })
        .collect()
}

/// 64-bit FNV-1a: small, fixed by its specification, and stable across
/// Rust versions and platforms (unlike `std`'s `DefaultHasher`), which is
/// what a unique id that must outlive restarts needs.
struct Fnv1a64(
    /// The hash state so far.
    u64,
);

impl Fnv1a64 {
    fn new() -> Fnv1a64 {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_collisions_are_resolved_deterministically() {
        let bad: &[u8] = b"has space";
        let digest = unique_ids(&[bad])[0].clone();
        // A valid name equal to the digest keeps it; the bad name moves on.
        let ids = unique_ids(&[bad, digest.as_bytes()]);
        assert_eq!(ids[1], digest);
        assert_ne!(ids[0], digest);
        assert!(is_valid_uid(ids[0].as_bytes()));
        assert_eq!(ids, unique_ids(&[bad, digest.as_bytes()]));
    }

    #[test]
    fn wire_size_hint_parsing() {
        assert_eq!(wire_size_hint(b"1.host,S=10,W=12"), Some(12));
        assert_eq!(wire_size_hint(b"1.host,W=12,S=10"), Some(12));
        assert_eq!(wire_size_hint(b"1.host,W=x,W=7"), Some(7));
        assert_eq!(wire_size_hint(b"1.host,S=10"), None);
        assert_eq!(wire_size_hint(b"1.host,W="), None);
        assert_eq!(wire_size_hint(b"1.host,W=99999999999999999999999"), None);
    }
}
