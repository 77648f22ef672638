//! What an instance keeps between the requests it serves when the host
//! reuses it (`instance_reuse` in `plugins/npm.toml`): the last packages
//! it opened (their index, `package.json` and exported files), the
//! tarballs of exact versions and where built modules are (`pack.rs`). A
//! package's modules are asked for together (date-fns's index imports
//! some 300 of its files), and each would otherwise read and parse the
//! same index and `package.json` again.
//!
//! Everything kept is named by what cannot change: a tarball's SHA-512,
//! an exact version's tarball. Nothing of one request's caller is kept,
//! so a reused instance answers as a fresh one would. With reuse off, each
//! instance starts empty and this keeps nothing useful.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use crate::archive::Index;
use crate::pack::Known;
use crate::package::Manifest;
use crate::registry::Dist;

/// How many packages an instance keeps (the last opened).
const PACKAGES: usize = 8;
/// How many exact versions' tarballs it keeps.
const DISTS: usize = 4096;
/// How many package versions' packs of built modules it knows (a page's
/// graph spans a few dozen packages).
const PACKS: usize = 256;

/// A package's `package.json` and, for production and development builds,
/// the file → exported subpath map (`Manifest::exported_files`).
pub struct Digest {
    pub manifest: Manifest,
    pub exported: [BTreeMap<String, String>; 2],
}

impl Digest {
    /// The exported files for a build with `dev`.
    pub fn exported(&self, dev: bool) -> &BTreeMap<String, String> {
        &self.exported[usize::from(dev)]
    }
}

#[derive(Default)]
struct Kept {
    /// (blob key, index), the most recent first.
    indexes: VecDeque<(String, Rc<Index>)>,
    digests: VecDeque<(String, Rc<Digest>)>,
    /// `name@version` → its tarball.
    dists: HashMap<String, Dist>,
    /// A prefix of packs of built modules → what is known of them.
    packs: VecDeque<(String, Rc<Known>)>,
}

thread_local! {
    static KEPT: RefCell<Kept> = RefCell::default();
}

/// The most recent first, at most `PACKAGES`.
fn find<T>(list: &mut VecDeque<(String, Rc<T>)>, key: &str) -> Option<Rc<T>> {
    let at = list.iter().position(|(k, _)| k == key)?;
    let entry = list.remove(at)?;
    let found = entry.1.clone();
    list.push_front(entry);
    Some(found)
}

fn keep<T>(list: &mut VecDeque<(String, Rc<T>)>, key: &str, value: Rc<T>, most: usize) {
    list.retain(|(k, _)| k != key);
    list.push_front((key.to_string(), value));
    list.truncate(most);
}

/// The index of the package kept under `key`, if kept.
pub fn index(key: &str) -> Option<Rc<Index>> {
    KEPT.with(|k| find(&mut k.borrow_mut().indexes, key))
}

pub fn keep_index(key: &str, index: Rc<Index>) {
    KEPT.with(|k| keep(&mut k.borrow_mut().indexes, key, index, PACKAGES));
}

/// The digest of the package kept under `key`, made by `make` if not kept.
pub fn digest<E>(key: &str, make: impl FnOnce() -> Result<Digest, E>) -> Result<Rc<Digest>, E> {
    if let Some(found) = KEPT.with(|k| find(&mut k.borrow_mut().digests, key)) {
        return Ok(found);
    }
    let made = Rc::new(make()?);
    KEPT.with(|k| keep(&mut k.borrow_mut().digests, key, made.clone(), PACKAGES));
    Ok(made)
}

/// The tarball of `name@version`, if kept.
pub fn dist(label: &str) -> Option<Dist> {
    KEPT.with(|k| k.borrow().dists.get(label).cloned())
}

pub fn keep_dist(label: &str, dist: &Dist) {
    KEPT.with(|k| {
        let dists = &mut k.borrow_mut().dists;
        if dists.len() >= DISTS {
            dists.clear();
        }
        dists.insert(label.to_string(), dist.clone());
    });
}

/// What is known of the packs under `prefix`, if this instance has looked.
pub fn packs(prefix: &str) -> Option<Rc<Known>> {
    KEPT.with(|k| find(&mut k.borrow_mut().packs, prefix))
}

pub fn keep_packs(prefix: &str, known: Rc<Known>) {
    KEPT.with(|k| keep(&mut k.borrow_mut().packs, prefix, known, PACKS));
}
