//! SQLite's write-ahead log, read from its file: the frames committed
//! since a position, checked as SQLite checks them (the header's salts and
//! the running checksum), and the pages they hold written into a database
//! file. This is how a database's changes reach its change log (`log`):
//! its owner commits, reads the new frames, and appends their pages
//! before it answers. Physical pages rather than statements: replaying
//! them gives the same bytes whatever the statements did (`random()`,
//! `CURRENT_TIMESTAMP`, schema changes, `VACUUM`).
//!
//! The owner checkpoints only frames the log holds already (automatic
//! checkpoints are off, and so is the checkpoint at close), so the frames
//! after the log's last position are in the file until they are shipped,
//! a crash between a commit and its append included.
//!
//! The format: <https://www.sqlite.org/fileformat2.html#walformat>.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The WAL header's size; frames follow it.
const HEADER: u64 = 32;
/// A frame's header's size; its page follows it.
const FRAME_HEADER: usize = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// Where a reader stands in a WAL: after the frame that ends at `offset`,
/// of the WAL whose header has `salt`, with the running `checksum` there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub salt: [u32; 2],
    pub offset: u64,
    pub checksum: [u32; 2],
}

/// The pages committed since a position: where each is in the WAL, not
/// its bytes (a transaction may write a gigabyte; the owner streams them
/// into the log, `write_pages`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frames {
    pub page_size: u32,
    /// The database's size in pages after the last commit.
    pub db_pages: u32,
    /// Each page written, once: the offset of its last version's bytes in
    /// the WAL, by page number.
    pub pages: BTreeMap<u32, u64>,
    /// After the last commit's frame.
    pub end: Position,
    wal: PathBuf,
}

impl Frames {
    /// Writes `[page u32 LE][its bytes]` for each page, in page order,
    /// to `out`, reading them from the WAL.
    pub fn write_pages(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut file = std::fs::File::open(&self.wal)?;
        let mut page = vec![0u8; self.page_size as usize];
        for (number, offset) in &self.pages {
            file.seek(SeekFrom::Start(*offset))?;
            file.read_exact(&mut page)?;
            out.write_all(&number.to_le_bytes())?;
            out.write_all(&page)?;
        }
        Ok(())
    }
}

/// The path of a database's WAL.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// The frames of `wal` committed after `since` (from the start if `since`
/// is `None` or names an earlier WAL, one the file was restarted over
/// since). `None` if nothing was committed after it. Reads a frame at a
/// time.
pub fn committed_since(wal: &Path, since: Option<Position>) -> std::io::Result<Option<Frames>> {
    let mut file = match std::fs::File::open(wal) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut header = [0u8; HEADER as usize];
    if file.read_exact(&mut header).is_err() {
        return Ok(None); // empty (truncated by a checkpoint) or being made
    }
    let word = |i: usize| u32::from_be_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let big_endian = match word(0) {
        MAGIC_LE => false,
        MAGIC_BE => true,
        _ => return Ok(None),
    };
    let page_size = word(8);
    let salt = [word(16), word(20)];
    if !(512..=65536).contains(&page_size)
        || checksum(big_endian, &header[..24], [0, 0]) != [word(24), word(28)]
    {
        return Ok(None); // a header being written: nothing is committed yet
    }
    let start = match since {
        Some(p) if p.salt == salt && p.offset >= HEADER => p,
        _ => Position {
            salt,
            offset: HEADER,
            checksum: [word(24), word(28)],
        },
    };
    file.seek(SeekFrom::Start(start.offset))?;
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    let frames = Frames {
        page_size,
        wal: wal.to_path_buf(),
        ..Frames::default()
    };
    read_frames(reader, frames, big_endian, start)
}

/// Frames from `start` on, up to the last valid commit frame, into
/// `frames`.
fn read_frames(
    mut reader: impl Read,
    mut frames: Frames,
    big_endian: bool,
    start: Position,
) -> std::io::Result<Option<Frames>> {
    let page_size = frames.page_size as usize;
    let mut frame = vec![0u8; FRAME_HEADER + page_size];
    let mut running = start.checksum;
    let mut offset = start.offset;
    let mut pending: Vec<(u32, u64)> = Vec::new();
    let mut committed = false;
    loop {
        match reader.read_exact(&mut frame) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let word = |at: usize| u32::from_be_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
        if [word(8), word(12)] != start.salt {
            break; // left from before the WAL restarted
        }
        running = checksum(big_endian, &frame[..8], running);
        running = checksum(big_endian, &frame[FRAME_HEADER..], running);
        if running != [word(16), word(20)] {
            break; // torn, or left from a rolled-back transaction
        }
        pending.push((word(0), offset + FRAME_HEADER as u64));
        offset += frame.len() as u64;
        let db_pages = word(4);
        if db_pages != 0 {
            frames.pages.extend(pending.drain(..));
            frames.db_pages = db_pages;
            frames.end = Position {
                salt: start.salt,
                offset,
                checksum: running,
            };
            committed = true;
        }
    }
    Ok(committed.then_some(frames))
}

/// SQLite's WAL checksum of `data` (a multiple of 8 bytes), continuing
/// from `s`.
fn checksum(big_endian: bool, data: &[u8], mut s: [u32; 2]) -> [u32; 2] {
    for pair in data.chunks_exact(8) {
        let read = |b: &[u8]| {
            let b: [u8; 4] = b.try_into().expect("4 bytes");
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s[0] = s[0].wrapping_add(read(&pair[..4])).wrapping_add(s[1]);
        s[1] = s[1].wrapping_add(read(&pair[4..])).wrapping_add(s[0]);
    }
    s
}

/// Writes `pages` into the database file `db` (made if missing) and cuts
/// it to `db_pages`: the database as it was after the commit the pages
/// came from, given the file as it was before it. Not synced: the caller
/// syncs once it wrote every entry it replays.
pub fn apply(
    db: &Path,
    page_size: u32,
    db_pages: u32,
    pages: impl Iterator<Item = std::io::Result<(u32, Vec<u8>)>>,
) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(db)?;
    for page in pages {
        let (page, data) = page?;
        if page == 0 || page > db_pages || data.len() != page_size as usize {
            continue; // past the end once committed, or not a page
        }
        file.seek(SeekFrom::Start(u64::from(page - 1) * u64::from(page_size)))?;
        file.write_all(&data)?;
    }
    file.set_len(u64::from(db_pages) * u64::from(page_size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// A connection that leaves every frame in its WAL, as the owner's.
    fn open(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .unwrap();
        conn
    }

    /// `frames`' pages, read from the WAL, written into `into`.
    fn replay(frames: &Frames, into: &Path) {
        let mut raw = Vec::new();
        frames.write_pages(&mut raw).unwrap();
        let each = raw.chunks_exact(4 + frames.page_size as usize).map(|c| {
            let number = u32::from_le_bytes(c[..4].try_into().unwrap());
            Ok((number, c[4..].to_vec()))
        });
        apply(into, frames.page_size, frames.db_pages, each).unwrap();
    }

    fn rows(path: &Path) -> Vec<(i64, String)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn committed_pages_replayed_give_the_same_database() {
        let dir = tempfile::tempdir().unwrap();
        let (source, copy) = (dir.path().join("a.db"), dir.path().join("b.db"));
        let conn = open(&source);
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        let first = committed_since(&wal_path(&source), None).unwrap().unwrap();
        conn.execute("INSERT INTO t (v) VALUES ('one'), ('two')", [])
            .unwrap();
        // A rolled-back transaction commits nothing.
        conn.execute_batch("BEGIN; INSERT INTO t (v) VALUES ('gone'); ROLLBACK")
            .unwrap();
        let second = committed_since(&wal_path(&source), Some(first.end))
            .unwrap()
            .unwrap();
        assert!(second.end.offset > first.end.offset);
        assert_eq!(
            committed_since(&wal_path(&source), Some(second.end)).unwrap(),
            None
        );
        for frames in [&first, &second] {
            replay(frames, &copy);
        }
        assert_eq!(rows(&copy), [(1, "one".into()), (2, "two".into())]);
        // A checkpoint that truncates restarts the WAL: read from its start.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        conn.execute("DELETE FROM t WHERE id = 1", []).unwrap();
        let third = committed_since(&wal_path(&source), Some(second.end))
            .unwrap()
            .unwrap();
        assert_ne!(third.end.salt, second.end.salt);
        replay(&third, &copy);
        assert_eq!(rows(&copy), [(2, "two".into())]);
    }

    #[test]
    fn a_torn_frame_ends_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("a.db");
        let conn = open(&source);
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        let first = committed_since(&wal_path(&source), None).unwrap().unwrap();
        conn.execute("INSERT INTO t (v) VALUES ('one')", [])
            .unwrap();
        drop(conn);
        // Corrupt the last frame's page: its checksum no longer holds.
        let wal = wal_path(&source);
        let mut bytes = std::fs::read(&wal).unwrap();
        let last = bytes.len() - 100;
        bytes[last] ^= 0xff;
        std::fs::write(&wal, &bytes).unwrap();
        let read = committed_since(&wal, None).unwrap().unwrap();
        assert_eq!(read.end, first.end);
    }
}
