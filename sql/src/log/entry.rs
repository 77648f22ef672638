//! A log entry's bytes: the pages one or more commits wrote (`Pages`),
//! deflated, kept inline up to `INLINE` bytes and else in a blob the entry
//! names; or the note that the database was restored (`Restored`).
//!
//! `[kind u8][at_ms u64]`, then for pages `[page_size u32][db_pages u32]
//! [salt 2×u32][offset u64][checksum 2×u32]` and the deflated block (or
//! the blob's key); for a restore, the snapshot's key.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::wal::{Frames, Position};

/// Entries whose pages deflate to more than this keep them in a blob.
pub const INLINE: usize = 256 * 1024;

/// One entry of a database's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Pages {
        at_ms: u64,
        page_size: u32,
        db_pages: u32,
        /// Where the owner's WAL stood after these pages.
        end: Position,
        pages: Stored,
    },
    /// The database became the snapshot `snapshot` (a restore).
    Restored { at_ms: u64, snapshot: String },
}

/// Where an entry's pages are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Inline(Bytes),
    Blob(String),
}

const PAGES_INLINE: u8 = 1;
const PAGES_IN_BLOB: u8 = 2;
const RESTORED: u8 = 3;

impl Entry {
    pub fn at_ms(&self) -> u64 {
        match self {
            Entry::Pages { at_ms, .. } | Entry::Restored { at_ms, .. } => *at_ms,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Entry::Pages {
                at_ms,
                page_size,
                db_pages,
                end,
                pages,
            } => {
                let (kind, body) = match pages {
                    Stored::Inline(bytes) => (PAGES_INLINE, bytes.as_ref()),
                    Stored::Blob(key) => (PAGES_IN_BLOB, key.as_bytes()),
                };
                out.put_u8(kind);
                out.put_u64_le(*at_ms);
                out.put_u32_le(*page_size);
                out.put_u32_le(*db_pages);
                out.put_u32_le(end.salt[0]);
                out.put_u32_le(end.salt[1]);
                out.put_u64_le(end.offset);
                out.put_u32_le(end.checksum[0]);
                out.put_u32_le(end.checksum[1]);
                out.put_slice(body);
            }
            Entry::Restored { at_ms, snapshot } => {
                out.put_u8(RESTORED);
                out.put_u64_le(*at_ms);
                out.put_slice(snapshot.as_bytes());
            }
        }
        out.freeze()
    }

    pub fn decode(mut raw: Bytes) -> Option<Self> {
        if raw.len() < 9 {
            return None;
        }
        let kind = raw.get_u8();
        let at_ms = raw.get_u64_le();
        let text = |raw: Bytes| String::from_utf8(raw.to_vec()).ok();
        match kind {
            PAGES_INLINE | PAGES_IN_BLOB if raw.len() >= 32 => {
                let page_size = raw.get_u32_le();
                let db_pages = raw.get_u32_le();
                let salt = [raw.get_u32_le(), raw.get_u32_le()];
                let offset = raw.get_u64_le();
                let checksum = [raw.get_u32_le(), raw.get_u32_le()];
                let pages = match kind {
                    PAGES_INLINE => Stored::Inline(raw),
                    _ => Stored::Blob(text(raw)?),
                };
                Some(Entry::Pages {
                    at_ms,
                    page_size,
                    db_pages,
                    end: Position {
                        salt,
                        offset,
                        checksum,
                    },
                    pages,
                })
            }
            RESTORED => Some(Entry::Restored {
                at_ms,
                snapshot: text(raw)?,
            }),
            _ => None,
        }
    }
}

/// An entry's deflated pages, made: in memory while they fit inline,
/// else in a file beside the database (bounded memory whatever a
/// transaction wrote), to go to the blob store.
pub enum Block {
    Inline(Vec<u8>),
    Spilled(PathBuf),
}

/// `frames`' pages as one deflated block, `[page u32 LE][bytes]` each,
/// read from the WAL a page at a time; past `INLINE` bytes it goes on in
/// the file `spill`.
pub fn deflate(frames: &Frames, spill: &Path) -> std::io::Result<Block> {
    let sink = Spill {
        memory: Vec::new(),
        file: None,
        path: spill,
    };
    let mut out = flate2::write::DeflateEncoder::new(sink, flate2::Compression::fast());
    frames.write_pages(&mut out)?;
    let sink = out.finish()?;
    match sink.file {
        None => Ok(Block::Inline(sink.memory)),
        Some(mut file) => {
            file.flush()?;
            Ok(Block::Spilled(spill.to_path_buf()))
        }
    }
}

/// Memory up to `INLINE` bytes, then the file.
struct Spill<'a> {
    memory: Vec<u8>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    path: &'a Path,
}

impl Write for Spill<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() && self.memory.len() + bytes.len() > INLINE {
            let mut file = std::io::BufWriter::new(std::fs::File::create(self.path)?);
            file.write_all(&std::mem::take(&mut self.memory))?;
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(bytes)?,
            None => self.memory.extend_from_slice(bytes),
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// The pages of a deflated block of pages of `page_size`, one at a time.
pub fn inflate(
    block: impl Read,
    page_size: u32,
) -> impl Iterator<Item = std::io::Result<(u32, Vec<u8>)>> {
    let mut pages = flate2::read::DeflateDecoder::new(block);
    std::iter::from_fn(move || {
        let mut number = [0u8; 4];
        match pages.read_exact(&mut number) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(e)),
        }
        let mut page = vec![0u8; page_size as usize];
        Some(
            pages
                .read_exact(&mut page)
                .map(|()| (u32::from_le_bytes(number), page)),
        )
    })
}
