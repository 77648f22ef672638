//! Import-map rewriting: bare specifiers (`react`, `@scope/pkg`,
//! `pkg/sub`) become URLs, through an import map (exact keys, and keys
//! ending in `/` as prefixes, as browsers read import maps) and else a CDN
//! URL template. Relative and absolute paths and URLs are left alone. Static
//! imports, `export … from` and `import("…")` with a string are rewritten.

use std::collections::BTreeMap;

use swc_core::ecma::ast::{CallExpr, Callee, ExportAll, Expr, ImportDecl, Lit, NamedExport, Str};
use swc_core::ecma::visit::{VisitMut, VisitMutWith};

/// The CDN used when the manifest names none.
pub const DEFAULT_CDN: &str = "https://esm.sh/{pkg}";

/// An import map and the URL template for what it does not map. `{pkg}` in
/// a URL is the specifier, `{origin}` the caller's `TR_ORIGIN`.
#[derive(Debug, Clone)]
pub struct ImportMap {
    imports: BTreeMap<String, String>,
    cdn: String,
    origin: String,
}

impl ImportMap {
    pub fn new(
        imports: BTreeMap<String, String>,
        cdn: Option<String>,
        origin: String,
    ) -> Result<Self, String> {
        if let Some(key) = imports.keys().find(|k| k.is_empty() || !is_bare(k)) {
            return Err(format!(
                "import map key {key:?} is not a bare specifier (like `react` or `lodash/`)"
            ));
        }
        let cdn = cdn.unwrap_or_else(|| DEFAULT_CDN.into());
        if !cdn.contains("{pkg}") {
            return Err(format!("the CDN template {cdn:?} has no {{pkg}}"));
        }
        Ok(ImportMap {
            imports,
            cdn,
            origin,
        })
    }

    /// The manifest's map (`IMPORT_MAP`, a JSON object of specifier to URL)
    /// and template (`CDN_URL`).
    pub fn configured(origin: String) -> Result<Self, String> {
        let imports = match crate::setting("IMPORT_MAP") {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| format!("IMPORT_MAP is not a JSON object of strings: {e}"))?,
            None => BTreeMap::new(),
        };
        ImportMap::new(imports, crate::setting("CDN_URL"), origin)
    }

    /// Where `specifier` points, or `None` to leave it as it is.
    pub fn resolve(&self, specifier: &str) -> Option<String> {
        if !is_bare(specifier) {
            return None;
        }
        let url = if let Some(url) = self.imports.get(specifier) {
            url.clone()
        } else if let Some((prefix, url)) = self
            .imports
            .iter()
            .filter(|(k, _)| k.ends_with('/') && specifier.starts_with(k.as_str()))
            .max_by_key(|(k, _)| k.len())
        {
            format!("{url}{}", &specifier[prefix.len()..])
        } else {
            self.cdn.replace("{pkg}", specifier)
        };
        Some(url.replace("{origin}", self.origin.trim_end_matches('/')))
    }

    pub fn rewrite(&self, module: &mut swc_core::ecma::ast::Module) {
        module.visit_mut_with(&mut Rewrite(self));
    }
}

/// `react`, `@scope/pkg`, `pkg/sub`: not `./x`, `../x`, `/x`, or a URL
/// (`https:`, `node:`, `data:`).
pub fn is_bare(specifier: &str) -> bool {
    let has_scheme = specifier.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    !(specifier.starts_with('.') || specifier.starts_with('/') || has_scheme)
}

struct Rewrite<'a>(&'a ImportMap);

impl Rewrite<'_> {
    fn source(&self, src: &mut Str) {
        let Some(specifier) = src.value.as_str() else {
            return;
        };
        if let Some(url) = self.0.resolve(specifier) {
            *src = Str {
                span: src.span,
                value: url.into(),
                raw: None,
            };
        }
    }
}

impl VisitMut for Rewrite<'_> {
    fn visit_mut_import_decl(&mut self, n: &mut ImportDecl) {
        self.source(&mut n.src);
    }

    fn visit_mut_export_all(&mut self, n: &mut ExportAll) {
        self.source(&mut n.src);
    }

    fn visit_mut_named_export(&mut self, n: &mut NamedExport) {
        if let Some(src) = &mut n.src {
            self.source(src);
        }
    }

    fn visit_mut_call_expr(&mut self, n: &mut CallExpr) {
        n.visit_mut_children_with(self);
        if !matches!(n.callee, Callee::Import(_)) {
            return;
        }
        if let Some(arg) = n.args.first_mut()
            && arg.spread.is_none()
            && let Expr::Lit(Lit::Str(src)) = &mut *arg.expr
        {
            self.source(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ImportMap {
        let imports = [
            ("react", "{origin}/assets/react.mjs"),
            ("lodash/", "https://cdn.example/lodash/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        ImportMap::new(imports, None, "https://spike.test/".into()).unwrap()
    }

    #[test]
    fn bare_specifiers_are_mapped_else_sent_to_the_cdn() {
        let map = map();
        let r = |s| map.resolve(s);
        assert_eq!(
            r("react").as_deref(),
            Some("https://spike.test/assets/react.mjs")
        );
        assert_eq!(
            r("lodash/get").as_deref(),
            Some("https://cdn.example/lodash/get")
        );
        assert_eq!(
            r("react-dom/client").as_deref(),
            Some("https://esm.sh/react-dom/client")
        );
        assert_eq!(
            r("@scope/pkg/sub").as_deref(),
            Some("https://esm.sh/@scope/pkg/sub")
        );
        for left in [
            "./a",
            "../b",
            "/c.js",
            "https://x.test/a.js",
            "node:fs",
            "data:text/javascript,1",
        ] {
            assert_eq!(r(left), None, "{left}");
        }
    }

    #[test]
    fn a_bad_map_is_refused() {
        let one = |k: &str| [(k.to_string(), "https://x.test/".to_string())].into();
        assert!(ImportMap::new(one("./a"), None, String::new()).is_err());
        assert!(
            ImportMap::new(BTreeMap::new(), Some("https://cdn/".into()), String::new()).is_err()
        );
    }
}
