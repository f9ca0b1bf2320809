//! The snapshot of an mbox and its cache on disk, so a large mbox is not
//! read again at every login.
//!
//! The index file (`.<mbox>.pop3d-index` beside the mbox, or
//! `<index_dir>/<user>.pop3d-index`) records, for the mbox it was made
//! from, its device, inode, size and modification time, its last 64 bytes
//! (the *tail*), and per message the offsets, wire size, separator hash and
//! UIDL. At open:
//!
//! - same device, inode, size and mtime: the index is used as is;
//! - same inode, the file only grew, the bytes before the old end still
//!   equal the recorded tail and the last message's separator is still in
//!   place: only the last message and what follows are scanned (the last
//!   message, because text appended to it without a separator belongs to
//!   it), and every other message keeps its entry and UIDL;
//! - otherwise the whole file is scanned.
//!
//! After a rewrite this store writes the index of the new file itself,
//! carrying every UIDL over (see [`crate::uidl`] on why that matters).
//!
//! The file is a cache: it ends with a checksum, everything in it is
//! checked before use, and anything wrong with it means a full scan, never
//! a wrong answer. It is rewritten in place while the session lock (a
//! `flock` on this same file) is held, so no one reads it half-written; a
//! crash mid-write leaves a bad checksum. The format (little-endian):
//! magic `P3MBXIDX`, version, variant, X-UIDL setting, identity, tail,
//! message count, then per message five u64 (separator offset, content
//! start, content end, wire size, separator hash) and the UIDL (length
//! byte and bytes), then the FNV-1a checksum of everything before it.

use crate::quote::Variant;
use crate::scan::{self, Fnv64, ScanError, ScannedMessage};
use crate::uidl::{is_valid_uidl, UidAllocator};
use pop3d_plugin_api::{log_debug, Error, MessageInfo};
use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const MAGIC: &[u8; 8] = b"P3MBXIDX";
const VERSION: u32 = 1;

/// How many bytes before the end of the indexed region are recorded.
pub const TAIL_LEN: u64 = 64;

/// What identifies one state of an mbox file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Device of the file.
    pub dev: u64,
    /// Inode: a rename of another file into place changes it.
    pub ino: u64,
    /// Size, or, in an index, the end of the indexed region.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds, so two changes in one second differ.
    pub mtime_nsec: i64,
}

impl Identity {
    pub fn of(metadata: &Metadata) -> Identity {
        Identity {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.len(),
            mtime_sec: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        }
    }

    /// Whether both describe the same file (not necessarily the same state).
    pub fn same_file(&self, other: &Identity) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// Where one message is in the mbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Offset of the separator line.
    pub from_offset: u64,
    /// First byte after the separator line.
    pub content_start: u64,
    /// Just past the message's last byte.
    pub content_end: u64,
    /// Octets the host transmits.
    pub wire_size: u64,
    /// Hash of the separator line, to notice a rewrite by someone else.
    pub from_line_hash: u64,
}

/// The messages of an mbox as of one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The file this describes; `size` is the end of the indexed region.
    pub identity: Identity,
    /// The last bytes (at most [`TAIL_LEN`]) before `identity.size`.
    pub tail: Vec<u8>,
    /// Message positions, in file order.
    pub entries: Vec<Entry>,
    /// Sizes and UIDLs for the host, parallel to `entries`.
    pub listing: Vec<MessageInfo>,
}

impl Snapshot {
    /// The snapshot of a missing or empty mbox.
    pub fn empty(identity: Identity) -> Snapshot {
        Snapshot {
            identity,
            tail: Vec::new(),
            entries: Vec::new(),
            listing: Vec::new(),
        }
    }
}

/// Settings the index depends on: a change means a full scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSettings {
    /// Wire sizes depend on unquoting.
    pub variant: Variant,
    /// UIDLs depend on whether `X-UIDL:` counts.
    pub honour_x_uidl: bool,
}

/// Brings `stored` (the cached index, if any) up to date with the mbox
/// `file`, whose current identity is `current`. Returns the snapshot and
/// whether it differs from `stored`. The caller holds the read locks.
pub fn refresh(
    file: &File,
    path: &Path,
    current: Identity,
    stored: Option<Snapshot>,
    settings: IndexSettings,
) -> Result<(Snapshot, bool), Error> {
    if let Some(mut stored) = stored {
        if stored.identity == current {
            return Ok((stored, false));
        }
        if only_grew(file, path, current, &stored)? {
            log_debug!(
                "mbox: {} grew from {} to {} bytes; indexing the new part",
                path.display(),
                stored.identity.size,
                current.size
            );
            extend(file, path, current, &mut stored, settings)?;
            return Ok((stored, true));
        }
        log_debug!("mbox: {} changed; indexing it again", path.display());
    }
    let mut snapshot = Snapshot::empty(current);
    let mut ids = UidAllocator::new();
    scan_into(file, path, 0, None, &mut snapshot, &mut ids, settings)?;
    snapshot.tail = read_tail(file, current.size)?;
    Ok((snapshot, true))
}

/// Whether the file is `stored`'s file with bytes appended and nothing
/// else changed, as far as cheap checks can tell.
fn only_grew(
    file: &File,
    path: &Path,
    current: Identity,
    stored: &Snapshot,
) -> Result<bool, Error> {
    let Some(last) = stored.entries.last() else {
        return Ok(false);
    };
    if !stored.identity.same_file(&current) || current.size <= stored.identity.size {
        return Ok(false);
    }
    Ok(read_tail(file, stored.identity.size)? == stored.tail
        && separator_matches(file, last).map_err(|e| io_error(path, e))?)
}

/// Indexes what was appended to `snapshot`'s file, now `current`.
fn extend(
    file: &File,
    path: &Path,
    current: Identity,
    snapshot: &mut Snapshot,
    settings: IndexSettings,
) -> Result<(), Error> {
    let (Some(last), Some(last_info)) = (snapshot.entries.pop(), snapshot.listing.pop()) else {
        return Ok(());
    };
    snapshot.identity = current;
    let mut ids = UidAllocator::new();
    for info in &snapshot.listing {
        ids.reserve(&info.uid);
    }
    // The last message is scanned again (text appended to it belongs to
    // it) but keeps its id, even if a header section it never finished
    // now has more lines.
    ids.reserve(&last_info.uid);
    let keep = Some((last.from_offset, last_info.uid));
    scan_into(
        file,
        path,
        last.from_offset,
        keep,
        snapshot,
        &mut ids,
        settings,
    )?;
    snapshot.tail = read_tail(file, current.size)?;
    Ok(())
}

/// Scans `file[start..snapshot.identity.size)` and appends its messages.
/// `keep` is a message offset whose id is already decided.
fn scan_into(
    file: &File,
    path: &Path,
    start: u64,
    mut keep: Option<(u64, String)>,
    snapshot: &mut Snapshot,
    ids: &mut UidAllocator,
    settings: IndexSettings,
) -> Result<(), Error> {
    let result = scan::scan(
        file,
        start,
        snapshot.identity.size,
        settings.variant,
        |message: ScannedMessage| {
            let uid = match keep.take() {
                Some((offset, uid)) if offset == message.from_offset => uid,
                other => {
                    keep = other;
                    let x_uidl = message.x_uidl.as_deref().filter(|_| settings.honour_x_uidl);
                    ids.assign(x_uidl, &message.popa3d_uidl)
                }
            };
            snapshot.entries.push(Entry {
                from_offset: message.from_offset,
                content_start: message.content_start,
                content_end: message.content_end,
                wire_size: message.wire_size,
                from_line_hash: message.from_line_hash,
            });
            snapshot.listing.push(MessageInfo {
                wire_size: message.wire_size,
                uid,
            });
        },
    );
    match result {
        Ok(()) => Ok(()),
        Err(ScanError::NotAnMbox { offset }) => Err(Error::PermFail(format!(
            "{} is not an mbox (or is damaged): the line at byte {offset} comes before any \
             \"From \" separator line; repair or move the file",
            path.display()
        ))),
        Err(ScanError::Io(e)) => Err(io_error(path, e)),
    }
}

fn io_error(path: &Path, error: io::Error) -> Error {
    let text = format!("reading mbox {}: {error}", path.display());
    match error.kind() {
        io::ErrorKind::PermissionDenied => Error::PermFail(text),
        _ => Error::TempFail(text),
    }
}

/// The last (at most [`TAIL_LEN`]) bytes before `end`.
fn read_tail(file: &File, end: u64) -> Result<Vec<u8>, Error> {
    let len = end.min(TAIL_LEN);
    let mut tail = vec![0u8; len as usize];
    file.read_exact_at(&mut tail, end - len)
        .map_err(|e| Error::TempFail(format!("reading the end of an mbox: {e}")))?;
    Ok(tail)
}

/// Whether the separator line of `entry` is still where it was.
pub fn separator_matches(file: &File, entry: &Entry) -> io::Result<bool> {
    let mut hash = Fnv64::new();
    let mut chunk = [0u8; 512];
    let mut offset = entry.from_offset;
    while offset < entry.content_start {
        let want = (entry.content_start - offset).min(chunk.len() as u64) as usize;
        match file.read_at(&mut chunk[..want], offset) {
            Ok(0) => return Ok(false),
            Ok(got) => {
                hash.update(&chunk[..got]);
                offset += got as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hash.finish() == entry.from_line_hash)
}

/// The largest index file read: 100 bytes per message would allow ten
/// million messages. A bigger file is damage, not an index.
const MAX_INDEX_LEN: u64 = 1 << 30;

/// Reads the index from `file`; `None` (and a debug log line) if it is
/// empty, damaged, or made with other settings.
///
/// The file is read whole: it is about as large as the listing built from
/// it, which the maildrop holds anyway, and parsing a slice is several
/// times faster than many small reads.
pub fn load(file: &File, settings: IndexSettings) -> Option<Snapshot> {
    let length = file.metadata().ok()?.len();
    if length == 0 || length > MAX_INDEX_LEN {
        return None;
    }
    let mut bytes = vec![0u8; length as usize];
    if let Err(e) = file.read_exact_at(&mut bytes, 0) {
        log_debug!("mbox: index unreadable ({e}); indexing again");
        return None;
    }
    let parsed = parse(&bytes, settings);
    if parsed.is_none() {
        log_debug!("mbox: index damaged or made with other settings; indexing again");
    }
    parsed
}

/// Parses an index file's bytes; `None` if anything is wrong with them.
fn parse(bytes: &[u8], settings: IndexSettings) -> Option<Snapshot> {
    let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    let mut hash = Fnv64::new();
    hash.update(body);
    if hash.finish().to_le_bytes() != checksum {
        return None;
    }
    let mut cursor = Cursor { rest: body };
    if cursor.take(MAGIC.len())? != MAGIC || cursor.u32()? != VERSION {
        return None;
    }
    if cursor.u8()? != variant_code(settings.variant)
        || cursor.u8()? != u8::from(settings.honour_x_uidl)
    {
        return None;
    }
    let identity = Identity {
        dev: cursor.u64()?,
        ino: cursor.u64()?,
        size: cursor.u64()?,
        mtime_sec: cursor.u64()? as i64,
        mtime_nsec: cursor.u64()? as i64,
    };
    let tail_len = u64::from(cursor.u8()?);
    if tail_len > TAIL_LEN || tail_len > identity.size {
        return None;
    }
    let tail = cursor.take(tail_len as usize)?.to_vec();
    let count = cursor.u64()?;
    // Each record takes at least 42 bytes: a count the file cannot hold is
    // damage, and must not size an allocation.
    if count > (cursor.rest.len() / 42) as u64 {
        return None;
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut uids: Vec<&str> = Vec::with_capacity(count as usize);
    let mut previous_end = 0u64;
    for _ in 0..count {
        let entry = Entry {
            from_offset: cursor.u64()?,
            content_start: cursor.u64()?,
            content_end: cursor.u64()?,
            wire_size: cursor.u64()?,
            from_line_hash: cursor.u64()?,
        };
        let uid_len = cursor.u8()? as usize;
        let uid = std::str::from_utf8(cursor.take(uid_len)?).ok()?;
        let in_order = previous_end <= entry.from_offset
            && entry.from_offset < entry.content_start
            && entry.content_start <= entry.content_end
            && entry.content_end <= identity.size;
        if !in_order || !is_valid_uidl(uid) {
            return None;
        }
        previous_end = entry.content_end;
        entries.push(entry);
        uids.push(uid);
    }
    if !cursor.rest.is_empty() {
        return None;
    }
    let mut seen = HashSet::with_capacity(uids.len());
    if !uids.iter().all(|uid| seen.insert(*uid)) {
        return None;
    }
    let listing = entries
        .iter()
        .zip(uids)
        .map(|(entry, uid)| MessageInfo {
            wire_size: entry.wire_size,
            uid: uid.to_owned(),
        })
        .collect();
    Some(Snapshot {
        identity,
        tail,
        entries,
        listing,
    })
}

/// Reads little-endian fields off the front of a slice.
struct Cursor<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Writes `snapshot` over the index in `file`.
pub fn save(file: &File, snapshot: &Snapshot, settings: IndexSettings) -> io::Result<()> {
    file.set_len(0)?;
    (&*file).seek(SeekFrom::Start(0))?;
    let mut writer = IndexWriter {
        inner: BufWriter::with_capacity(scan::CHUNK_LEN, file),
        hash: Fnv64::new(),
    };
    writer.put(MAGIC)?;
    writer.put(&VERSION.to_le_bytes())?;
    writer.put(&[
        variant_code(settings.variant),
        u8::from(settings.honour_x_uidl),
    ])?;
    let identity = &snapshot.identity;
    for value in [
        identity.dev,
        identity.ino,
        identity.size,
        identity.mtime_sec as u64,
        identity.mtime_nsec as u64,
    ] {
        writer.put(&value.to_le_bytes())?;
    }
    writer.put(&[snapshot.tail.len() as u8])?;
    writer.put(&snapshot.tail)?;
    writer.put(&(snapshot.entries.len() as u64).to_le_bytes())?;
    for (entry, info) in snapshot.entries.iter().zip(&snapshot.listing) {
        for value in [
            entry.from_offset,
            entry.content_start,
            entry.content_end,
            entry.wire_size,
            entry.from_line_hash,
        ] {
            writer.put(&value.to_le_bytes())?;
        }
        writer.put(&[info.uid.len() as u8])?;
        writer.put(info.uid.as_bytes())?;
    }
    let checksum = writer.hash.finish();
    writer.inner.write_all(&checksum.to_le_bytes())?;
    writer.inner.flush()
}

fn variant_code(variant: Variant) -> u8 {
    match variant {
        Variant::Mboxrd => 1,
        Variant::Mboxo => 2,
    }
}

/// Writes the index while hashing what it wrote.
struct IndexWriter<'a> {
    /// The index file.
    inner: BufWriter<&'a File>,
    /// Checksum of everything written so far.
    hash: Fnv64,
}

impl IndexWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.inner.write_all(bytes)
    }
}
