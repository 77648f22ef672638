//! A version's files: its tarball fetched from the registry, its SHA-512
//! checked against the registry's `integrity` before a byte of it is read,
//! unpacked under limits (size, files, paths that stay inside the package,
//! no links), and kept in blob storage by that hash: the files one after
//! another in one object, and an index of where each is in another. A
//! file is then one ranged read, whichever version asks for it (and the
//! files of a graph's level a few reads together: `read_ahead`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Component;
use std::rc::Rc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use spike_sdk::blob::{Bucket, ByteRange, ObjectWriter, PutOptions};
use spike_sdk::client::{Fetch, FetchError};
use spike_sdk::router::HttpError;

use crate::config::{Config, origin};
use crate::memo;
use crate::registry::{Dist, registry_down};

/// Where each file of a package is in its unpacked object.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    /// Path inside the package (`package.json`, `cjs/react.production.js`)
    /// → offset and length.
    pub files: BTreeMap<String, (u64, u64)>,
}

/// A version's files, in blob storage.
pub struct Package<'a> {
    bucket: &'a Bucket,
    /// Its name in blob storage (and in the instance's memo).
    pub key: String,
    pub index: Rc<Index>,
    /// Files read ahead (`read_ahead`), each taken by its first `read`.
    ahead: RefCell<HashMap<String, Vec<u8>>>,
}

/// Files read ahead together are read as one range where the gap between
/// two of them is at most this (the other files of a package lie between
/// its modules: `.d.ts`, `.cjs` twins).
const READ_AHEAD_GAP: u64 = 64 << 10;

/// How long fetching a tarball may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

impl<'a> Package<'a> {
    /// The files of the version `dist` describes: kept ones, or fetched,
    /// checked and unpacked now.
    pub fn open(
        bucket: &'a Bucket,
        config: &Config,
        dist: &Dist,
        label: &str,
    ) -> Result<Self, HttpError> {
        let expected = expected_hash(dist, label)?;
        let key = format!("packages/{}", hex::encode(&expected));
        if let Some(index) = memo::index(&key) {
            return Ok(Package::new(bucket, key, index));
        }
        if let Some(index) = read_index(bucket, &key) {
            let index = Rc::new(index);
            memo::keep_index(&key, index.clone());
            return Ok(Package::new(bucket, key, index));
        }
        let tarball = fetch_tarball(config, dist, label)?;
        let actual = Sha512::digest(&tarball);
        if actual.as_slice() != expected.as_slice() {
            return Err(HttpError::new(
                422,
                "integrity_mismatch",
                format!(
                    "the tarball of {label} does not match the registry's integrity (sha512): refused"
                ),
            ));
        }
        let (files, index) = unpack(&tarball, config).map_err(|why| {
            HttpError::new(
                422,
                "bad_tarball",
                format!("the tarball of {label} is refused: {why}"),
            )
        })?;
        write(bucket, &key, &files, "application/octet-stream", Vec::new())?;
        let index_bytes = serde_json::to_vec(&index).expect("an index serializes");
        // The index last: a package with an index has its files.
        write(
            bucket,
            &format!("{key}.index"),
            &index_bytes,
            "application/json",
            Vec::new(),
        )?;
        let index = Rc::new(index);
        memo::keep_index(&key, index.clone());
        Ok(Package::new(bucket, key, index))
    }

    fn new(bucket: &'a Bucket, key: String, index: Rc<Index>) -> Self {
        Package {
            bucket,
            key,
            index,
            ahead: RefCell::default(),
        }
    }

    /// Reads the files `paths` (those the package has) now, as few ranges
    /// as they lie in, for `read` to take: a graph's modules are built
    /// together, and one ranged read each was half the time of building
    /// them (date-fns: 304 files, 40 of 85 ms).
    pub fn read_ahead(&self, paths: &[String]) -> Result<(), HttpError> {
        let mut wanted: Vec<(&str, u64, u64)> = paths
            .iter()
            .filter_map(|p| {
                let &(offset, length) = self.index.files.get(p)?;
                Some((p.as_str(), offset, length))
            })
            .collect();
        wanted.sort_by_key(|&(_, offset, _)| offset);
        let mut ahead = self.ahead.borrow_mut();
        let mut rest = wanted.as_slice();
        while let Some(&(_, start, _)) = rest.first() {
            // The files from `start` on whose gaps are small: one range.
            let mut end = start;
            let mut count = 0;
            for &(_, offset, length) in rest {
                if offset > end + READ_AHEAD_GAP {
                    break;
                }
                end = end.max(offset + length);
                count += 1;
            }
            let bytes = self.range(start, end - start)?;
            for &(path, offset, length) in &rest[..count] {
                let at = (offset - start) as usize;
                ahead.insert(path.to_string(), bytes[at..at + length as usize].to_vec());
            }
            rest = &rest[count..];
        }
        Ok(())
    }

    /// Whether `path` is a file of the package.
    pub fn has(&self, path: &str) -> bool {
        self.index.files.contains_key(path)
    }

    /// The bytes of file `path`, if the package has it.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, HttpError> {
        if let Some(bytes) = self.ahead.borrow_mut().remove(path) {
            return Ok(Some(bytes));
        }
        let Some(&(offset, length)) = self.index.files.get(path) else {
            return Ok(None);
        };
        self.range(offset, length).map(Some)
    }

    /// `length` bytes of the package's files from `offset`.
    fn range(&self, offset: u64, length: u64) -> Result<Vec<u8>, HttpError> {
        if length == 0 {
            return Ok(Vec::new());
        }
        let range = ByteRange {
            offset,
            length: Some(length),
        };
        let body = self.bucket.get(&self.key, Some(range))?.ok_or_else(|| {
            HttpError::new(
                500,
                "package_lost",
                "a kept package's files are gone; ask again",
            )
        })?;
        let mut bytes = Vec::with_capacity(length as usize);
        loop {
            match body.body.blocking_read(1 << 20) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(spike_sdk::wasi::io::streams::StreamError::Closed) => break,
                Err(_) => {
                    return Err(HttpError::new(
                        500,
                        "storage",
                        "reading a package's file failed",
                    ));
                }
            }
        }
        Ok(bytes)
    }
}

/// The SHA-512 the registry lists for the tarball.
fn expected_hash(dist: &Dist, label: &str) -> Result<Vec<u8>, HttpError> {
    let missing = || {
        HttpError::new(
            422,
            "no_integrity",
            format!("the registry lists no sha512 integrity for {label}: it cannot be checked"),
        )
    };
    let encoded = dist
        .integrity
        .as_deref()
        .and_then(|i| i.strip_prefix("sha512-"))
        .ok_or_else(missing)?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|h| h.len() == 64)
        .ok_or_else(missing)
}

fn read_index(bucket: &Bucket, key: &str) -> Option<Index> {
    let body = bucket.get(&format!("{key}.index"), None).ok()??;
    let mut bytes = Vec::new();
    while let Ok(chunk) = body.body.blocking_read(1 << 20) {
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).ok()
}

fn fetch_tarball(config: &Config, dist: &Dist, label: &str) -> Result<Vec<u8>, HttpError> {
    // A document that points elsewhere would make spike a fetcher of any
    // URL a package's publisher likes.
    if origin(&dist.tarball) != config.registry_origin() {
        return Err(HttpError::new(
            422,
            "foreign_tarball",
            format!(
                "the tarball of {label} is not on the registry ({}): refused",
                config.registry_origin()
            ),
        ));
    }
    let got = Fetch::get(&dist.tarball)
        .map_err(|e| tarball_error(&e, label))?
        .timeout(FETCH_TIMEOUT)
        .max_body(config.max_tarball_bytes)
        .send()
        .map_err(|e| tarball_error(&e, label))?;
    if got.status != 200 {
        return Err(registry_down(format!(
            "the registry answered {} for the tarball of {label}",
            got.status
        )));
    }
    Ok(got.body)
}

fn tarball_error(e: &FetchError, label: &str) -> HttpError {
    match e {
        FetchError::TooLarge => HttpError::new(
            422,
            "too_large",
            format!("the tarball of {label} is larger than MAX_TARBALL_MIB"),
        ),
        FetchError::Denied(_) => HttpError::new(
            503,
            "registry_not_granted",
            "the plugin's manifest does not grant the registry's host (grants.outbound)",
        ),
        other => registry_down(format!("fetching the tarball of {label} failed: {other:?}")),
    }
}

/// Writes `bytes` as the object `key`, with `metadata`.
pub fn write(
    bucket: &Bucket,
    key: &str,
    bytes: &[u8],
    content_type: &str,
    metadata: Vec<(String, String)>,
) -> Result<(), HttpError> {
    let options = PutOptions {
        content_type: Some(content_type.into()),
        metadata,
    };
    let writer = bucket.put(key, &options)?;
    let sink = writer.body()?;
    let written = spike_sdk::http::write_all(&sink, bytes);
    drop(sink);
    if written.is_err() {
        return Err(HttpError::new(
            500,
            "storage",
            "writing to blob storage failed",
        ));
    }
    ObjectWriter::finish(writer)?;
    Ok(())
}

/// The regular files of a `.tgz` one after another, and where each is.
/// Every entry's path must stay inside the package; links are refused.
pub fn unpack(tarball: &[u8], config: &Config) -> Result<(Vec<u8>, Index), String> {
    // The gzip stream as a whole (headers, padding, pax records) is bounded
    // too: a small tarball must not inflate without end.
    let limit = config.max_unpacked_bytes as u64 + (config.max_files as u64 + 16) * 1536;
    let decoder = flate2::read::GzDecoder::new(tarball).take(limit + 1);
    let mut archive = tar::Archive::new(decoder);
    let mut files = Vec::new();
    let mut index = Index::default();
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("a broken entry: {e}"))?;
        let raw_path = entry
            .path()
            .map_err(|e| format!("an entry's path: {e}"))?
            .into_owned();
        let shown = raw_path.display().to_string();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(format!("`{shown}` is a link"));
        }
        let path =
            inner_path(&raw_path).ok_or_else(|| format!("`{shown}` is outside the package"))?;
        if kind.is_dir() || kind.is_pax_global_extensions() || path.is_empty() {
            continue;
        }
        if !kind.is_file() {
            return Err(format!("`{shown}` is not a regular file"));
        }
        if index.files.len() >= config.max_files {
            return Err(format!("more than {} files (MAX_FILES)", config.max_files));
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| format!("`{shown}`: {e}"))?;
        if files.len() as u64 + size > config.max_unpacked_bytes as u64 {
            return Err(format!(
                "it unpacks to more than {} MiB (MAX_UNPACKED_MIB)",
                config.max_unpacked_bytes >> 20
            ));
        }
        let offset = files.len() as u64;
        entry
            .read_to_end(&mut files)
            .map_err(|e| format!("`{shown}` ends early: {e}"))?;
        index
            .files
            .insert(path, (offset, files.len() as u64 - offset));
    }
    Ok((files, index))
}

/// An entry's path without the tarball's top folder (`package/` as npm
/// packs it), if every part of it is a plain name.
fn inner_path(path: &std::path::Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if parts.iter().any(|p| p.contains('\\')) {
        return None;
    }
    Some(parts.into_iter().skip(1).collect::<Vec<_>>().join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut config = Config::from_env();
        config.max_files = 4;
        config.max_unpacked_bytes = 1 << 16;
        config
    }

    /// A gzipped tar holding `entries` (path, type, body).
    fn tgz(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, body) in entries {
            let mut header = tar::Header::new_gnu();
            // Written as raw bytes: the builder itself refuses `..`.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            if kind.is_symlink() {
                header.set_link_name("/etc/passwd").unwrap();
            }
            header.set_cksum();
            builder.append(&header, *body).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn files_are_unpacked_one_after_another() {
        let (files, index) = unpack(
            &tgz(&[
                ("package/package.json", tar::EntryType::Regular, b"{}"),
                (
                    "package/lib/a.js",
                    tar::EntryType::Regular,
                    b"export const a = 1;",
                ),
            ]),
            &config(),
        )
        .unwrap();
        let (offset, len) = index.files["lib/a.js"];
        assert_eq!(
            &files[offset as usize..(offset + len) as usize],
            b"export const a = 1;"
        );
        assert_eq!(index.files["package.json"], (0, 2));
    }

    #[test]
    fn escaping_paths_links_and_bombs_are_refused() {
        let c = config();
        let dotdot = tgz(&[("package/../../etc/x.js", tar::EntryType::Regular, b"1")]);
        assert!(
            unpack(&dotdot, &c)
                .unwrap_err()
                .contains("outside the package")
        );
        let absolute = tgz(&[("/etc/x.js", tar::EntryType::Regular, b"1")]);
        assert!(
            unpack(&absolute, &c)
                .unwrap_err()
                .contains("outside the package")
        );
        let link = tgz(&[("package/x.js", tar::EntryType::Symlink, b"")]);
        assert!(unpack(&link, &c).unwrap_err().contains("is a link"));
        let many: Vec<(String, tar::EntryType, &[u8])> = (0..5)
            .map(|i| {
                (
                    format!("package/{i}.js"),
                    tar::EntryType::Regular,
                    &b"1"[..],
                )
            })
            .collect();
        let many: Vec<(&str, tar::EntryType, &[u8])> =
            many.iter().map(|(p, k, b)| (p.as_str(), *k, *b)).collect();
        assert!(unpack(&tgz(&many), &c).unwrap_err().contains("MAX_FILES"));
        let big = vec![b'a'; 1 << 17];
        let bomb = tgz(&[("package/big.js", tar::EntryType::Regular, &big)]);
        assert!(bomb.len() < 4096, "{}", bomb.len());
        assert!(unpack(&bomb, &c).unwrap_err().contains("MAX_UNPACKED_MIB"));
    }
}
