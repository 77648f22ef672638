//! What a request under `/npm/` asks for: a package, a version or range, a
//! path inside it, and the build's options, read from the URL as esm.sh
//! reads its own: `/npm/{name}@{version-or-range}[/{subpath}]`, scoped
//! names too (`/npm/@emotion/react@11/jsx-runtime`), with `?dev`,
//! `?deps=react@19.1.0,scheduler@0.26.0` and `?external=react,react-dom`.

use std::collections::{BTreeMap, BTreeSet};

use spike_sdk::http::percent_decode_path;
use spike_sdk::router::HttpError;

/// The longest package name npm publishes.
const MAX_NAME: usize = 214;
/// The longest path inside a package a request may name.
const MAX_SUBPATH: usize = 1024;
/// The most packages `deps` and `external` may name each.
const MAX_LISTED: usize = 64;

/// One request's package, version and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRequest {
    /// `react`, `@emotion/react`.
    pub name: String,
    /// As written: an exact version, a range, a tag, or empty (`latest`).
    pub version: String,
    /// The path inside the package without its leading `/`; empty for the
    /// package's main entry.
    pub subpath: String,
}

/// How a module is built; every module it imports is built the same way,
/// so each URL it writes carries these options on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// `process.env.NODE_ENV` is `"development"` (else `"production"`).
    pub dev: bool,
    /// Packages pinned to an exact version wherever they are imported.
    pub deps: BTreeMap<String, String>,
    /// Packages left as bare imports, for the page's import map.
    pub external: BTreeSet<String>,
}

impl BuildOptions {
    /// The options from a query string (unknown parameters are refused,
    /// so that a typo is not silently a different build).
    pub fn parse(query: Option<&str>) -> Result<Self, HttpError> {
        let mut options = BuildOptions::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = spike_sdk::http::percent_decode(value);
            match key {
                "dev" if value.is_empty() || value == "true" => options.dev = true,
                "dev" if value == "false" => options.dev = false,
                "deps" => {
                    for pin in list(&value)? {
                        let (name, version) = split_name_version(pin)
                            .filter(|(_, v)| nodejs_semver::Version::parse(v).is_ok())
                            .ok_or_else(|| {
                                HttpError::bad_request(format!(
                                    "deps: `{pin}` is not name@exact-version"
                                ))
                            })?;
                        check_name(&name)?;
                        options.deps.insert(name, version);
                    }
                }
                "external" => {
                    for name in list(&value)? {
                        check_name(name)?;
                        options.external.insert(name.to_string());
                    }
                }
                _ => {
                    return Err(HttpError::bad_request(format!(
                        "unknown parameter `{key}`: the options are dev, deps and external"
                    )));
                }
            }
        }
        Ok(options)
    }

    /// The options as a query string, the same for the same options in
    /// any order ("" for none): part of every URL a build writes, and of
    /// the name its output is cached under.
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        if !self.deps.is_empty() {
            let pins: Vec<String> = self.deps.iter().map(|(n, v)| format!("{n}@{v}")).collect();
            parts.push(format!("deps={}", pins.join(",")));
        }
        if self.dev {
            parts.push("dev".to_string());
        }
        if !self.external.is_empty() {
            let names: Vec<&str> = self.external.iter().map(String::as_str).collect();
            parts.push(format!("external={}", names.join(",")));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }

    /// `"production"` or `"development"`.
    pub fn node_env(&self) -> &'static str {
        if self.dev {
            "development"
        } else {
            "production"
        }
    }
}

fn list(value: &str) -> Result<Vec<&str>, HttpError> {
    let items: Vec<&str> = value.split(',').filter(|s| !s.is_empty()).collect();
    if items.len() > MAX_LISTED {
        return Err(HttpError::bad_request(format!(
            "at most {MAX_LISTED} packages in deps or external"
        )));
    }
    Ok(items)
}

/// Reads `rest`, the path after `/npm/`, still percent-encoded.
pub fn parse_path(rest: &str) -> Result<ModuleRequest, HttpError> {
    let rest = percent_decode_path(rest)
        .ok_or_else(|| HttpError::bad_request("the path is not valid percent-encoded UTF-8"))?;
    let usage = "expected /npm/{name}@{version}[/{path}]";
    let (name_and_version, subpath) = if let Some(scoped) = rest.strip_prefix('@') {
        let (scope, after) = scoped
            .split_once('/')
            .ok_or_else(|| HttpError::bad_request(format!("a scoped name needs its /: {usage}")))?;
        let (package, subpath) = after.split_once('/').unwrap_or((after, ""));
        (format!("@{scope}/{package}"), subpath)
    } else {
        let (package, subpath) = rest.split_once('/').unwrap_or((&rest, ""));
        (package.to_string(), subpath)
    };
    let (name, version) = split_name_version(&name_and_version)
        .unwrap_or_else(|| (name_and_version.clone(), String::new()));
    check_name(&name)?;
    if version.len() > 256 || version.chars().any(|c| c.is_control()) {
        return Err(HttpError::bad_request(
            "the version is not a version, range or tag",
        ));
    }
    let subpath = subpath.trim_end_matches('/').to_string();
    if subpath.len() > MAX_SUBPATH
        || subpath
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == ".." || part.contains('\\'))
            && !subpath.is_empty()
    {
        return Err(HttpError::bad_request(format!(
            "the path inside the package is not a plain relative path: {usage}"
        )));
    }
    Ok(ModuleRequest {
        name,
        version,
        subpath,
    })
}

/// `name@version` split at the `@` after the scope's, if there is one.
fn split_name_version(s: &str) -> Option<(String, String)> {
    let from = usize::from(s.starts_with('@'));
    let at = s[from..].find('@')? + from;
    Some((s[..at].to_string(), s[at + 1..].to_string()))
}

/// npm's rules for a package name (lower case, URL-safe, at most 214
/// characters, a scope of its own form), so that a name can go into a
/// registry URL, a KV key and a module URL as it is.
pub fn check_name(name: &str) -> Result<(), HttpError> {
    let bad = |why: &str| HttpError::bad_request(format!("`{name}` is not a package name: {why}"));
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(bad("1 to 214 characters"));
    }
    let (scope, package) = match name.strip_prefix('@') {
        Some(scoped) => {
            let (scope, package) = scoped.split_once('/').ok_or_else(|| bad("@scope/name"))?;
            (Some(scope), package)
        }
        None => (None, name),
    };
    for part in scope.into_iter().chain([package]) {
        let plain = part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b));
        if part.is_empty() || !plain || part.starts_with('.') || part.starts_with('_') {
            return Err(bad(
                "lower-case letters, digits and - . _ ~, not starting with . or _",
            ));
        }
    }
    Ok(())
}

/// A package of `name`'s dependency list split from its subpath:
/// `@emotion/react/jsx-runtime` → (`@emotion/react`, `jsx-runtime`).
pub fn split_bare(specifier: &str) -> (&str, &str) {
    let mut slashes = specifier.match_indices('/');
    let end = if specifier.starts_with('@') {
        slashes.nth(1)
    } else {
        slashes.next()
    };
    match end {
        Some((at, _)) => (&specifier[..at], &specifier[at + 1..]),
        None => (specifier, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_as_esm_sh_reads_them() {
        let r = parse_path("react@19.1.0").unwrap();
        assert_eq!(
            (r.name.as_str(), r.version.as_str(), r.subpath.as_str()),
            ("react", "19.1.0", "")
        );
        let r = parse_path("@emotion/react@^11/jsx-runtime").unwrap();
        assert_eq!(
            (r.name.as_str(), r.version.as_str(), r.subpath.as_str()),
            ("@emotion/react", "^11", "jsx-runtime")
        );
        let r = parse_path("%40emotion%2Freact@11.14.0").unwrap();
        assert_eq!(r.name, "@emotion/react");
        let r = parse_path("date-fns").unwrap();
        assert_eq!((r.name.as_str(), r.version.as_str()), ("date-fns", ""));
        let r = parse_path("lodash-es@4.17.21/debounce.js").unwrap();
        assert_eq!(r.subpath, "debounce.js");
        for bad in [
            "React@1", "a@1/../b", "a@1/./b", "@scope", "a@1//b", "_a@1", "a b@1",
        ] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_have_one_spelling() {
        let a = BuildOptions::parse(Some("external=react-dom,react&deps=scheduler@0.26.0&dev"))
            .unwrap();
        let b = BuildOptions::parse(Some(
            "dev=true&deps=scheduler@0.26.0&external=react,react-dom",
        ))
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.query(),
            "?deps=scheduler@0.26.0&dev&external=react,react-dom"
        );
        assert_eq!(BuildOptions::parse(None).unwrap().query(), "");
        assert!(BuildOptions::parse(Some("deps=react@^19")).is_err());
        assert!(BuildOptions::parse(Some("target=es5")).is_err());
    }

    #[test]
    fn bare_specifiers_split_after_the_scope() {
        assert_eq!(split_bare("react"), ("react", ""));
        assert_eq!(split_bare("react-dom/client"), ("react-dom", "client"));
        assert_eq!(
            split_bare("@emotion/react/jsx-runtime"),
            ("@emotion/react", "jsx-runtime")
        );
        assert_eq!(split_bare("@emotion/react"), ("@emotion/react", ""));
    }
}
