//! A package's `package.json` and the files it names, chosen as bundlers
//! choose them: `exports` (and `imports`) with the conditions a browser
//! build matches, in the order the package lists them; without `exports`,
//! `module`, `browser`, `main`; the `browser` field's replacements of
//! files and modules; and a path completed as Node completes it (`.js`,
//! `.mjs`, `.cjs`, `.json`, a folder's `index`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::archive::Package;

/// What is read of `package.json`.
#[derive(Debug, Default, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub main: Option<String>,
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub browser: Option<Target>,
    #[serde(default)]
    pub exports: Option<Target>,
    #[serde(default)]
    pub imports: Option<Target>,
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
    #[serde(default, rename = "peerDependencies")]
    pub peer_dependencies: BTreeMap<String, String>,
    #[serde(default, rename = "optionalDependencies")]
    pub optional_dependencies: BTreeMap<String, String>,
    #[serde(default)]
    pub gypfile: Option<bool>,
}

/// A value of `exports`, `imports` or `browser`, its objects' keys kept in
/// the package's order (the first matching condition wins).
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Path(String),
    /// `null` (or `false` in `browser`): nothing, on purpose.
    Nothing,
    List(Vec<Target>),
    Map(Vec<(String, Target)>),
}

/// Where a specifier inside a package leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum File {
    /// A file of the package.
    Path(String),
    /// Replaced by nothing (`"browser": {"./node.js": false}`): an empty module.
    Empty,
}

/// The conditions a browser's ES module build matches; `require` only if
/// nothing else does (a package for Node and CommonJS alone).
fn conditions(dev: bool, with_require: bool) -> Vec<&'static str> {
    let mode = if dev { "development" } else { "production" };
    let mut list = vec!["browser", "import", "module", mode, "default"];
    if with_require {
        list.push("require");
    }
    list
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("its package.json does not read: {e}"))
    }

    /// Whether `.js` files are ES modules.
    pub fn is_module_type(&self) -> bool {
        self.kind.as_deref() == Some("module")
    }

    /// The range this package asks for of `dependency`, if it lists it.
    pub fn range_of(&self, dependency: &str) -> Option<&str> {
        self.dependencies
            .get(dependency)
            .or_else(|| self.peer_dependencies.get(dependency))
            .or_else(|| self.optional_dependencies.get(dependency))
            .map(String::as_str)
    }

    /// The file `subpath` ("" for the package itself, `jsx-runtime`,
    /// `lib/a.js`) of the package leads to. `Err` names why none.
    pub fn entry(&self, files: &Package, subpath: &str, dev: bool) -> Result<File, String> {
        let key = if subpath.is_empty() {
            ".".to_string()
        } else {
            format!("./{subpath}")
        };
        // A file the package has is served under its own path (the URLs a
        // build writes name files) unless an export has that exact name.
        if !subpath.is_empty()
            && files.has(subpath)
            && !self.exports.as_ref().is_some_and(|e| has_key(e, &key))
        {
            return self.file(files, subpath);
        }
        if let Some(exports) = &self.exports
            && let Some(target) = exports_match(exports, &key, dev)
        {
            return match target {
                Some(path) => self.file(files, &normalize("", &path)?),
                None => Err(format!("its exports map `{key}` to nothing")),
            };
        }
        if !subpath.is_empty() {
            return self.file(files, subpath);
        }
        let main = [
            self.module.as_deref(),
            self.browser_main(),
            self.main.as_deref(),
        ]
        .into_iter()
        .flatten()
        .find(|m| {
            self.file(files, &normalize("", m).unwrap_or_default())
                .is_ok()
        });
        self.file(files, &normalize("", main.unwrap_or("index.js"))?)
    }

    fn browser_main(&self) -> Option<&str> {
        match &self.browser {
            Some(Target::Path(p)) => Some(p),
            _ => None,
        }
    }

    /// The file `path` (relative to the package's root, normalized) is,
    /// completed as Node completes it and replaced as `browser` says.
    pub fn file(&self, files: &Package, path: &str) -> Result<File, String> {
        let found = complete(files, path).ok_or_else(|| format!("it has no file `{path}`"))?;
        Ok(self.replaced(&found).unwrap_or(File::Path(found)))
    }

    /// What `browser` puts in place of file `path`, if anything.
    fn replaced(&self, path: &str) -> Option<File> {
        let Some(Target::Map(map)) = &self.browser else {
            return None;
        };
        let stem = path.rsplit_once('.').map(|(s, _)| s);
        map.iter().find_map(|(from, to)| {
            let from = normalize("", from).ok()?;
            if from != path && Some(from.as_str()) != stem {
                return None;
            }
            Some(match to {
                Target::Path(p) => File::Path(normalize("", p).ok()?),
                _ => File::Empty,
            })
        })
    }

    /// What `browser` puts in place of the package or built-in `name`:
    /// `Some(None)` for nothing, `Some(Some(other))` for another package.
    pub fn replaced_module(&self, name: &str) -> Option<Option<String>> {
        let Some(Target::Map(map)) = &self.browser else {
            return None;
        };
        map.iter()
            .find(|(from, _)| from == name)
            .map(|(_, to)| match to {
                Target::Path(p) => Some(p.clone()),
                _ => None,
            })
    }

    /// `#name` through the package's `imports`.
    pub fn import(&self, specifier: &str, dev: bool) -> Option<Option<String>> {
        let imports = self.imports.as_ref()?;
        exports_match(imports, specifier, dev)
    }

    /// Each exported subpath (no patterns) and the file it leads to, so
    /// that a file is always written under one URL: its export's if it
    /// has one.
    pub fn exported_files(&self, files: &Package, dev: bool) -> BTreeMap<String, String> {
        let mut by_file = BTreeMap::new();
        if let Some(Target::Map(map)) = &self.exports {
            // In reverse, so that the first key naming a file is its URL.
            for (key, target) in map.iter().rev() {
                let Some(subpath) = key.strip_prefix("./") else {
                    continue;
                };
                if subpath.contains('*') || subpath.ends_with('/') {
                    continue;
                }
                let file = pick(target, dev, None)
                    .and_then(|path| normalize("", &path).ok())
                    .and_then(|path| self.file(files, &path).ok());
                if let Some(File::Path(file)) = file {
                    by_file.insert(file, subpath.to_string());
                }
            }
        }
        // The package's own URL above all.
        if let Ok(File::Path(file)) = self.entry(files, "", dev) {
            by_file.insert(file, String::new());
        }
        by_file
    }
}

/// `path` completed to a file the package has.
fn complete(files: &Package, path: &str) -> Option<String> {
    if files.has(path) {
        return Some(path.to_string());
    }
    for ext in [".js", ".mjs", ".cjs", ".json"] {
        let with = format!("{path}{ext}");
        if files.has(&with) {
            return Some(with);
        }
    }
    let dir = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    if let Ok(Some(bytes)) = files.read(&format!("{dir}package.json"))
        && let Ok(inner) = serde_json::from_slice::<Manifest>(&bytes)
        && let Some(main) = inner.module.as_deref().or(inner.main.as_deref())
        && let Ok(main) = normalize(&dir, main)
        && main != path
        && let Some(found) = complete(files, &main)
    {
        return Some(found);
    }
    ["index.js", "index.mjs", "index.cjs", "index.json"]
        .iter()
        .map(|index| format!("{dir}{index}"))
        .find(|p| files.has(p))
}

/// Whether `exports` names `key` itself (not by a pattern).
fn has_key(exports: &Target, key: &str) -> bool {
    match exports {
        Target::Map(map) if map.iter().any(|(k, _)| k.starts_with('.')) => {
            map.iter().any(|(k, _)| k == key)
        }
        _ => key == ".",
    }
}

/// The target `key` (`.`, `./sub`, `#name`) leads to in `exports` or
/// `imports`: `None` if no key matches, `Some(None)` if it leads nowhere.
fn exports_match(exports: &Target, key: &str, dev: bool) -> Option<Option<String>> {
    let keyed = match exports {
        Target::Map(map)
            if map
                .iter()
                .any(|(k, _)| k.starts_with('.') || k.starts_with('#')) =>
        {
            map
        }
        // A string, list or conditions: the package's "." only.
        sugar => return (key == ".").then(|| pick(sugar, dev, None)),
    };
    if let Some((_, target)) = keyed.iter().find(|(k, _)| k == key) {
        return Some(pick(target, dev, None));
    }
    // The longest pattern (`./*`, `./lib/*.js`) that matches, its `*` filled.
    let mut best: Option<(&str, &Target, String)> = None;
    for (k, target) in keyed {
        let Some((prefix, suffix)) = k.split_once('*') else {
            continue;
        };
        if key.len() >= prefix.len() + suffix.len()
            && key.starts_with(prefix)
            && key.ends_with(suffix)
            && best.as_ref().is_none_or(|(b, _, _)| prefix.len() > b.len())
        {
            let star = key[prefix.len()..key.len() - suffix.len()].to_string();
            best = Some((prefix, target, star));
        }
    }
    best.map(|(_, target, star)| pick(target, dev, Some(&star)))
}

/// The path a target leads to under the browser's conditions.
fn pick(target: &Target, dev: bool, star: Option<&str>) -> Option<String> {
    pick_with(target, &conditions(dev, false), star)
        .or_else(|| pick_with(target, &conditions(dev, true), star))
}

fn pick_with(target: &Target, conditions: &[&str], star: Option<&str>) -> Option<String> {
    match target {
        Target::Path(p) => Some(match star {
            Some(s) => p.replace('*', s),
            None => p.clone(),
        }),
        Target::Nothing => None,
        Target::List(list) => list.iter().find_map(|t| pick_with(t, conditions, star)),
        Target::Map(map) => map
            .iter()
            .filter(|(condition, _)| conditions.contains(&condition.as_str()))
            .find_map(|(_, t)| pick_with(t, conditions, star)),
    }
}

/// `relative` joined to the folder `dir` (relative to the package's root,
/// "" or ending in `/`), `.` and `..` resolved; `Err` if it leaves the
/// package.
pub fn normalize(dir: &str, relative: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts
                    .pop()
                    .ok_or_else(|| format!("`{relative}` leads outside the package"))?;
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TargetVisitor)
    }
}

struct TargetVisitor;

impl<'de> Visitor<'de> for TargetVisitor {
    type Value = Target;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a path, null, a list or an object")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Target, E> {
        Ok(Target::Path(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Target, E> {
        Ok(Target::Nothing)
    }

    fn visit_none<E: de::Error>(self) -> Result<Target, E> {
        Ok(Target::Nothing)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Target, E> {
        Ok(Target::Nothing)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Target, E> {
        Ok(Target::Nothing)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Target, E> {
        Ok(Target::Nothing)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Target, E> {
        Ok(Target::Nothing)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Target, A::Error> {
        let mut list = Vec::new();
        while let Some(t) = seq.next_element()? {
            list.push(t);
        }
        Ok(Target::List(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Target, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Target>()? {
            entries.push((k, v));
        }
        Ok(Target::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports(json: &str) -> Target {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn conditions_are_taken_in_the_packages_order() {
        let e = exports(
            r#"{".": {"require": "./a.cjs", "import": "./a.mjs"}, "./client": {"node": "./n.js", "default": "./c.js"}}"#,
        );
        assert_eq!(exports_match(&e, ".", false), Some(Some("./a.mjs".into())));
        assert_eq!(
            exports_match(&e, "./client", false),
            Some(Some("./c.js".into()))
        );
        assert_eq!(exports_match(&e, "./other", false), None);
        let e = exports(
            r#"{"browser": {"development": "./dev.js", "default": "./prod.js"}, "default": "./node.js"}"#,
        );
        assert_eq!(exports_match(&e, ".", true), Some(Some("./dev.js".into())));
        assert_eq!(
            exports_match(&e, ".", false),
            Some(Some("./prod.js".into()))
        );
        let e = exports(r#"{"node": "./n.js", "require": "./r.js"}"#);
        assert_eq!(exports_match(&e, ".", false), Some(Some("./r.js".into())));
        assert_eq!(
            exports_match(&exports(r#""./i.js""#), ".", false),
            Some(Some("./i.js".into()))
        );
    }

    #[test]
    fn patterns_fill_their_star_and_the_longest_wins() {
        let e = exports(
            r#"{"./*": "./dist/*.js", "./locale/*": {"import": "./dist/locale/*/index.mjs"}, "./internal/*": null}"#,
        );
        assert_eq!(
            exports_match(&e, "./format", false),
            Some(Some("./dist/format.js".into()))
        );
        assert_eq!(
            exports_match(&e, "./locale/fr", false),
            Some(Some("./dist/locale/fr/index.mjs".into()))
        );
        assert_eq!(exports_match(&e, "./internal/x", false), Some(None));
    }

    #[test]
    fn paths_stay_inside_the_package() {
        assert_eq!(normalize("lib/", "../index.js").unwrap(), "index.js");
        assert_eq!(normalize("lib/a/", "./b/../c.js").unwrap(), "lib/a/c.js");
        assert!(normalize("lib/", "../../x.js").is_err());
    }
}
