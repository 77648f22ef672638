//! Built modules, kept in blob storage a graph at a time. A package's
//! modules are asked for together (date-fns's index imports some 300 of
//! its files, a browser fetches them all a moment later), so the request
//! that builds one also builds the files of the same package it imports
//! (`lib.rs`) and keeps them all in one pack: one object, their code one
//! after another and then an index of where each is, which its metadata
//! points at (`index-at`). That is one write for the graph, where one per
//! module cost a durable commit each.
//!
//! Each module keeps its own URL, so it is still one module in the
//! browser whichever way it is reached. A pack is named by a hash of its
//! bytes and never changes; the packs of one package version under one set
//! of options share a prefix (`graphs/{hash}/`), and a module is looked for
//! in them: in what this instance has read of them (`memo.rs`), else in a
//! listing of the prefix.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use sha2::{Digest, Sha256};
use spike_sdk::blob::{Bucket, ByteRange, ObjectBody, ObjectMeta};
use spike_sdk::router::HttpError;

use crate::archive::{Index, write};
use crate::memo;

/// How many packs of one package version and options are looked at: each
/// is one entry's graph, and a graph reaches most of its package.
const MAX_PACKS: u32 = 1000;

/// The metadata that says where a pack's index starts.
const INDEX_AT: &str = "index-at";

/// Where a kept module is.
#[derive(Debug, Clone)]
pub struct Location {
    /// The pack's object.
    pub pack: String,
    pub offset: u64,
    pub length: u64,
}

/// What is known of the packs under one prefix: the packs read, and each
/// module's place (the first pack that has it).
#[derive(Debug, Default, Clone)]
pub struct Known {
    pub packs: Vec<String>,
    pub modules: HashMap<String, Location>,
}

impl Known {
    fn add(&mut self, pack: &str, index: &Index) {
        self.packs.push(pack.to_string());
        for (subpath, &(offset, length)) in &index.files {
            self.modules
                .entry(subpath.clone())
                .or_insert_with(|| Location {
                    pack: pack.to_string(),
                    offset,
                    length,
                });
        }
    }
}

/// The packs of one package version built with one set of options.
pub struct Packs<'a> {
    bucket: &'a Bucket,
    /// `graphs/{hash}/`.
    prefix: String,
    /// What this request's listing found: one listing serves both the
    /// lookup that missed and the build that follows it.
    listed: RefCell<Option<Rc<Known>>>,
}

/// A kept module: its bytes, and a tag naming them.
pub struct Kept {
    pub body: ObjectBody,
    pub etag: String,
}

impl<'a> Packs<'a> {
    /// `parts` decide the modules (the builder's version, the package, its
    /// version, the options).
    pub fn new(bucket: &'a Bucket, parts: &[&[u8]]) -> Self {
        let prefix = format!("{}/", spike_sdk::cache::key("graphs/", parts));
        Packs {
            bucket,
            prefix,
            listed: RefCell::default(),
        }
    }

    /// What is known of these packs, with any written since this instance
    /// last looked (listed once a request).
    pub fn known(&self) -> Rc<Known> {
        if let Some(listed) = &*self.listed.borrow() {
            return listed.clone();
        }
        let mut known = memo::packs(&self.prefix).unwrap_or_default();
        let mut cursor = None;
        let mut changed = false;
        while let Ok(page) = self.bucket.list(&self.prefix, cursor.as_deref(), MAX_PACKS) {
            for object in &page.objects {
                if known.packs.contains(&object.key) {
                    continue;
                }
                if let Some(index) = self.index(object) {
                    Rc::make_mut(&mut known).add(&object.key, &index);
                    changed = true;
                }
            }
            cursor = page.cursor;
            if cursor.is_none() || known.packs.len() >= MAX_PACKS as usize {
                break;
            }
        }
        if changed {
            memo::keep_packs(&self.prefix, known.clone());
        }
        *self.listed.borrow_mut() = Some(known.clone());
        known
    }

    /// The module served under `subpath`, if kept: from what this
    /// instance knows, else from a fresh look at the packs.
    pub fn find(&self, subpath: &str) -> Option<Kept> {
        let location = match memo::packs(&self.prefix) {
            Some(known) if known.modules.contains_key(subpath) => known.modules[subpath].clone(),
            _ => self.known().modules.get(subpath)?.clone(),
        };
        let range = ByteRange {
            offset: location.offset,
            length: Some(location.length),
        };
        let body = self.bucket.get(&location.pack, Some(range)).ok()??;
        let id = location.pack.rsplit('/').next().unwrap_or_default();
        Some(Kept {
            body,
            etag: format!("{id}.{}", location.offset),
        })
    }

    /// The index at the end of the pack `object` (an object appears whole
    /// or not at all: a listed pack has its index).
    fn index(&self, object: &ObjectMeta) -> Option<Index> {
        let (_, at) = object.metadata.iter().find(|(name, _)| name == INDEX_AT)?;
        let offset = at.parse().ok()?;
        let range = ByteRange {
            offset,
            length: None,
        };
        let body = self.bucket.get(&object.key, Some(range)).ok()??;
        let mut bytes = Vec::new();
        while let Ok(chunk) = body.body.blocking_read(1 << 20) {
            bytes.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps `modules` (subpath → code) as one pack. One not kept is built
    /// again when asked for: the answer itself was good.
    pub fn keep(&self, modules: &[(String, Vec<u8>)]) -> Result<(), HttpError> {
        let mut index = Index::default();
        let mut bytes = Vec::new();
        let mut hash = Sha256::new();
        for (subpath, code) in modules {
            index
                .files
                .insert(subpath.clone(), (bytes.len() as u64, code.len() as u64));
            bytes.extend_from_slice(code);
            hash.update((subpath.len() as u64).to_le_bytes());
            hash.update(subpath);
            hash.update((code.len() as u64).to_le_bytes());
            hash.update(code);
        }
        let pack = format!("{}{}", self.prefix, hex::encode(hash.finalize()));
        let index_at = bytes.len();
        bytes.extend(serde_json::to_vec(&index).expect("an index serializes"));
        let metadata = vec![(INDEX_AT.to_string(), index_at.to_string())];
        write(
            self.bucket,
            &pack,
            &bytes,
            "application/octet-stream",
            metadata,
        )?;
        let mut known = memo::packs(&self.prefix).unwrap_or_default();
        if !known.packs.contains(&pack) {
            Rc::make_mut(&mut known).add(&pack, &index);
            memo::keep_packs(&self.prefix, known);
        }
        Ok(())
    }
}
