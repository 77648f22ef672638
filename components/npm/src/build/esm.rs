//! An ES module of a package: its code kept, each `import`, `export … from`
//! and `import("…")` of a string pointed at the URL it resolves to, and
//! `process` / `global` provided if it uses them.

use std::collections::HashMap;

use spike_sdk::router::HttpError;
use swc_core::ecma::ast::{CallExpr, Callee, ExportAll, ImportDecl, Lit, NamedExport, Str};
use swc_core::ecma::visit::{Visit, VisitMut, VisitMutWith, VisitWith, visit_mut_pass};

use super::scan::{globals_used, string_of};
use super::{Parsed, process_shim};
use crate::resolve::{Build, Resolved, unbuildable};

/// Where a resolved specifier is written: a URL, or as it was.
pub fn written(resolved: &Resolved) -> String {
    match resolved {
        Resolved::Url(url) => url.clone(),
        Resolved::Bare(bare) => bare.clone(),
        Resolved::Empty => EMPTY_URL.to_string(),
        // Fails in the browser, naming what is missing, if it is ever run.
        Resolved::Builtin(name) => format!("node:{name}"),
    }
}

/// The URL of the empty module (`_` starts no package's name).
pub const EMPTY_URL: &str = "/npm/_/empty.js";

pub fn build(build: &Build, path: &str, parsed: &mut Parsed) -> Result<String, HttpError> {
    parsed.simplify();
    point_imports(build, path, parsed)?;
    let mut code = prelude(build, parsed);
    code.push_str(&parsed.print());
    Ok(code)
}

/// Points each `import`, `export … from` and `import("…")` of a string
/// in `parsed` (an ES module or a CommonJS script) at where it leads. A
/// static import of a Node built-in is a 422; a dynamic one fails only if
/// it runs.
pub fn point_imports(build: &Build, path: &str, parsed: &mut Parsed) -> Result<(), HttpError> {
    let mut found = Specifiers::default();
    parsed.program.visit_with(&mut found);
    let mut rewrite = HashMap::new();
    for (specifier, is_static) in found.list {
        if rewrite.contains_key(&specifier) {
            continue;
        }
        let resolved = build.resolve(path, &specifier)?;
        if let (Resolved::Builtin(name), true) = (&resolved, is_static) {
            return Err(needs_builtin(build, path, name));
        }
        if is_static {
            build.reach(&resolved);
        }
        rewrite.insert(specifier, written(&resolved));
    }
    parsed
        .program
        .mutate(&mut visit_mut_pass(Rewrite { to: &rewrite }));
    Ok(())
}

/// 422: a module needs a Node built-in whatever happens.
pub fn needs_builtin(build: &Build, path: &str, name: &str) -> HttpError {
    unbuildable(format!(
        "{}: `{path}` needs the Node built-in `{name}`, which browsers do not have (a package for Node, not for browsers)",
        build.label()
    ))
}

/// Declarations of the Node globals the module uses but a browser lacks.
pub fn prelude(build: &Build, parsed: &Parsed) -> String {
    let used = globals_used(&parsed.program, parsed.unresolved, &["process", "global"]);
    let mut prelude = String::new();
    if used.contains("process") {
        prelude.push_str(&format!(
            "const process = globalThis.process ?? {};\n",
            process_shim(build.options.node_env())
        ));
    }
    if used.contains("global") {
        prelude.push_str("const global = globalThis;\n");
    }
    prelude
}

/// Every specifier of the module, with whether it is static.
#[derive(Default)]
struct Specifiers {
    list: Vec<(String, bool)>,
}

impl Visit for Specifiers {
    fn visit_import_decl(&mut self, n: &ImportDecl) {
        self.list
            .extend(n.src.value.as_str().map(|s| (s.to_string(), true)));
    }
    fn visit_named_export(&mut self, n: &NamedExport) {
        if let Some(src) = &n.src {
            self.list
                .extend(src.value.as_str().map(|s| (s.to_string(), true)));
        }
    }
    fn visit_export_all(&mut self, n: &ExportAll) {
        self.list
            .extend(n.src.value.as_str().map(|s| (s.to_string(), true)));
    }
    fn visit_call_expr(&mut self, n: &CallExpr) {
        if let Some(s) = dynamic_import(n) {
            self.list.push((s, false));
        }
        n.visit_children_with(self);
    }
}

/// The specifier of `import("…")`.
fn dynamic_import(call: &CallExpr) -> Option<String> {
    match (&call.callee, call.args.first()) {
        (Callee::Import(_), Some(arg)) if arg.spread.is_none() => string_of(&arg.expr),
        _ => None,
    }
}

/// Writes each specifier as `to` says.
struct Rewrite<'a> {
    pub to: &'a HashMap<String, String>,
}

impl Rewrite<'_> {
    fn str(&self, s: &mut Str) {
        if let Some(url) = s.value.as_str().and_then(|v| self.to.get(v)) {
            *s = Str {
                span: s.span,
                value: url.as_str().into(),
                raw: None,
            };
        }
    }
}

impl VisitMut for Rewrite<'_> {
    fn visit_mut_import_decl(&mut self, n: &mut ImportDecl) {
        self.str(&mut n.src);
    }
    fn visit_mut_named_export(&mut self, n: &mut NamedExport) {
        if let Some(src) = &mut n.src {
            self.str(src);
        }
    }
    fn visit_mut_export_all(&mut self, n: &mut ExportAll) {
        self.str(&mut n.src);
    }
    fn visit_mut_call_expr(&mut self, n: &mut CallExpr) {
        n.visit_mut_children_with(self);
        if dynamic_import(n).is_some()
            && let Some(arg) = n.args.first_mut()
            && let Some(specifier) = string_of(&arg.expr)
            && let Some(url) = self.to.get(&specifier)
        {
            *arg.expr = swc_core::ecma::ast::Expr::Lit(Lit::Str(Str {
                span: Default::default(),
                value: url.as_str().into(),
                raw: None,
            }));
        }
    }
}
