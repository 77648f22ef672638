//! What a site's folder holds at one moment: every file's content hash,
//! the asset manifest and the service worker's version, made in one scan.
//! Requests are answered from one snapshot, and a rebuild of the folder
//! replaces it whole, so a manifest never names a file the scan did not
//! find.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Files a site may hold; a folder with more is refused at the scan.
pub const MAX_FILES: usize = 50_000;

/// Files up to this size are kept in memory and sent from there.
pub const MEMORY_FILE_MAX: usize = 1 << 20;

/// The memory a site's files may take, all encodings counted; files past
/// it are read from disk for each request.
pub const MEMORY_BUDGET: usize = 128 << 20;

/// Text files without a precompressed sibling are compressed at the scan
/// above this size (smaller ones gain less than the headers cost).
pub const COMPRESS_ABOVE: usize = 1024;

/// One servable file.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// SHA-256 of its content, hex.
    pub hash: String,
    /// Whether `<name>.br` / `<name>.gz` siblings are there to send to
    /// clients that accept them.
    pub br: bool,
    pub gz: bool,
    /// Its name carries a content hash ([`is_hashed`]): cached for a year.
    pub immutable: bool,
    /// Text worth compressing ([`compressible`]).
    pub text: bool,
    /// Its bytes and encodings, if small enough to keep.
    pub memory: Option<InMemory>,
}

/// A file held in memory, in every encoding it is sent in.
#[derive(Debug, Clone)]
pub struct InMemory {
    pub content_type: String,
    pub identity: Bytes,
    /// From the `.br` / `.gz` sibling, or compressed at the scan.
    pub br: Option<Bytes>,
    pub gz: Option<Bytes>,
}

impl InMemory {
    fn size(&self) -> usize {
        self.identity.len()
            + self.br.as_ref().map_or(0, Bytes::len)
            + self.gz.as_ref().map_or(0, Bytes::len)
    }
}

impl FileEntry {
    /// The `ETag` header value: a prefix of the content hash.
    pub fn etag(&self) -> String {
        format!("\"{}\"", &self.hash[..32])
    }
}

/// A scan of a site's folder.
#[derive(Debug)]
pub struct Snapshot {
    /// By path relative to the folder, `/`-separated.
    pub files: BTreeMap<String, FileEntry>,
    /// `GET /ASSET_MANIFEST`: `{"path": "hash", ...}`.
    pub manifest: Bytes,
    /// A hash of the manifest: changes whenever any file does.
    pub version: String,
}

impl Snapshot {
    /// Scans `dir`: every regular file below it except dotfiles, and
    /// `.br` / `.gz` files beside the file they compress.
    pub fn scan(dir: &Path) -> std::io::Result<Self> {
        let mut found = Vec::new();
        walk(dir, "", &mut found)?;
        let names: std::collections::BTreeSet<&str> = found.iter().map(String::as_str).collect();
        let mut files = BTreeMap::new();
        let mut budget = MEMORY_BUDGET;
        for rel in &found {
            let sibling_of = |ext: &str| rel.strip_suffix(ext).filter(|base| names.contains(base));
            if sibling_of(".br").is_some() || sibling_of(".gz").is_some() {
                continue;
            }
            let bytes = std::fs::read(dir.join(rel))?;
            let br = names.contains(format!("{rel}.br").as_str());
            let gz = names.contains(format!("{rel}.gz").as_str());
            let hash = hex::encode(Sha256::digest(&bytes));
            let memory = if bytes.len() <= MEMORY_FILE_MAX {
                let sibling = |on: bool, ext: &str| -> std::io::Result<Option<Bytes>> {
                    Ok(if on {
                        Some(std::fs::read(dir.join(format!("{rel}{ext}")))?.into())
                    } else {
                        None
                    })
                };
                let (br_bytes, gz_bytes) = if br || gz {
                    (sibling(br, ".br")?, sibling(gz, ".gz")?)
                } else if bytes.len() > COMPRESS_ABOVE && compressible(rel) {
                    (Some(brotli_bytes(&bytes)), Some(gzip_bytes(&bytes)))
                } else {
                    (None, None)
                };
                let held = InMemory {
                    content_type: content_type(rel),
                    identity: bytes.into(),
                    br: br_bytes,
                    gz: gz_bytes,
                };
                (held.size() <= budget).then(|| {
                    budget -= held.size();
                    held
                })
            } else {
                None
            };
            let immutable = is_hashed(rel, &hash);
            files.insert(
                rel.clone(),
                FileEntry {
                    hash,
                    br,
                    gz,
                    immutable,
                    text: compressible(rel),
                    memory,
                },
            );
        }
        let manifest: BTreeMap<&str, &str> = files
            .iter()
            .map(|(path, f)| (path.as_str(), f.hash.as_str()))
            .collect();
        let manifest = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        let version = hex::encode(&Sha256::digest(&manifest)[..8]);
        Ok(Self {
            files,
            manifest: manifest.into(),
            version,
        })
    }
}

/// The `Content-Type` of a file, by its extension.
pub fn content_type(path: &str) -> String {
    mime_guess::from_path(path)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

/// Whether a file is text worth compressing, by its extension.
pub fn compressible(path: &str) -> bool {
    let ext = path
        .rsplit_once('.')
        .map_or("", |(_, ext)| ext)
        .to_ascii_lowercase();
    matches!(
        ext.as_str(),
        "html"
            | "htm"
            | "css"
            | "js"
            | "mjs"
            | "cjs"
            | "json"
            | "map"
            | "svg"
            | "txt"
            | "md"
            | "xml"
            | "csv"
            | "wasm"
            | "webmanifest"
    )
}

/// Brotli at quality 9: a file is compressed once, at the scan.
fn brotli_bytes(bytes: &[u8]) -> Bytes {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 9,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &bytes[..], &mut out, &params).expect("compressing in memory");
    out.into()
}

fn gzip_bytes(bytes: &[u8]) -> Bytes {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).expect("compressing in memory");
    enc.finish().expect("compressing in memory").into()
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        // Symbolic links are not followed: a site serves its own folder.
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(dir, &path, out)?;
        } else if kind.is_file() {
            out.push(path);
            if out.len() > MAX_FILES {
                return Err(std::io::Error::other(format!(
                    "more than {MAX_FILES} files"
                )));
            }
        }
    }
    Ok(())
}

/// Whether a file name carries a content hash, as bundlers name their
/// output (`app.3f9a2b1c.js`, `index-B4x9Qk2z.css`, `chunk-5BLJJTZG.js`):
/// a last `.`- or `-`-separated part of the stem of 8 or more letters,
/// digits or `_`, with at least one digit, or the start of the file's own
/// SHA-256.
pub fn is_hashed(path: &str, hash: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let Some(token) = stem
        .rsplit(['.', '-'])
        .next()
        .filter(|t| t.len() != stem.len())
    else {
        return false;
    };
    let fits = token.len() >= 8
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    fits && (token.bytes().any(|b| b.is_ascii_digit())
        || hash.starts_with(&token.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_told_apart() {
        let any = "0".repeat(64);
        for hashed in [
            "app.3f9a2b1c.js",
            "assets/index-B4x9Qk2z.css",
            "chunk-5BLJJTZG.js",
        ] {
            assert!(is_hashed(hashed, &any), "{hashed}");
        }
        for plain in [
            "index.html",
            "app.js",
            "favicon.ico",
            "my-component.js",
            "README",
        ] {
            assert!(!is_hashed(plain, &any), "{plain}");
        }
        // No digit, but the file's own hash.
        assert!(is_hashed(
            "app.abcdefab.js",
            &format!("abcdefab{}", "0".repeat(56))
        ));
    }

    #[test]
    fn a_scan_finds_files_and_their_compressed_siblings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<html>").unwrap();
        std::fs::write(dir.path().join("assets/app.js"), "code").unwrap();
        std::fs::write(dir.path().join("assets/app.js.gz"), "gz").unwrap();
        std::fs::write(dir.path().join("assets/app.js.br"), "br").unwrap();
        std::fs::write(dir.path().join("data.gz"), "a real gzip file").unwrap();
        std::fs::write(dir.path().join(".hidden"), "no").unwrap();
        let snap = Snapshot::scan(dir.path()).unwrap();
        let paths: Vec<&str> = snap.files.keys().map(String::as_str).collect();
        assert_eq!(paths, ["assets/app.js", "data.gz", "index.html"]);
        let app = &snap.files["assets/app.js"];
        assert!(app.br && app.gz);
        assert_eq!(app.hash, hex::encode(Sha256::digest(b"code")));
        let manifest: serde_json::Value = serde_json::from_slice(&snap.manifest).unwrap();
        assert_eq!(
            manifest["index.html"],
            hex::encode(Sha256::digest(b"<html>"))
        );
        // Any change moves the version.
        std::fs::write(dir.path().join("index.html"), "<html>!").unwrap();
        assert_ne!(Snapshot::scan(dir.path()).unwrap().version, snap.version);
    }
}
