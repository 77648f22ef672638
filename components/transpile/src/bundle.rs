//! Several files in, one ES module out: each file is parsed and lowered on
//! its own (by its extension's loader), its relative imports are resolved
//! among the request's files, and swc's bundler merges them from the entry
//! (scope-hoisted, unused exports dropped). Bare imports stay imports.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::anyhow;
use swc_core::atoms::Atom;
use swc_core::bundler::{
    Bundle, BundleKind, Bundler, Config, Hook, Load, ModuleData, ModuleRecord, ModuleType, Resolve,
};
use swc_core::common::{FileName, GLOBALS, Globals, Span, Spanned, SyntaxContext};
use swc_core::ecma::ast::{
    CallExpr, Callee, ExportAll, Expr, ImportDecl, KeyValueProp, Lit, MemberExpr, MemberProp,
    MetaPropExpr, MetaPropKind, Module, ModuleDecl, ModuleItem, NamedExport, Program, Str,
};
use swc_core::ecma::loader::resolve::Resolution;
use swc_core::ecma::transforms::base::helpers::Helpers;
use swc_core::ecma::transforms::base::hygiene::hygiene;
use swc_core::ecma::visit::{Visit, VisitMut, VisitMutWith, VisitWith};

use crate::compile::{Diagnostic, Session};
use crate::import_map::is_bare;
use crate::options::{Loader, Options};

/// The request's files merged from `entry`, still to be printed.
pub fn bundle(
    session: &Session,
    files: BTreeMap<String, String>,
    entry: &str,
    options: &Options,
) -> Result<Module, Vec<Diagnostic>> {
    let files: BTreeMap<String, String> = files
        .into_iter()
        .map(|(path, source)| (absolute(&path), source))
        .collect();
    let entry = absolute(entry);
    if !files.contains_key(&entry) {
        return Err(vec![request_error(format!(
            "the entry {entry} is not among `files`"
        ))]);
    }

    let mut prepared = HashMap::new();
    let mut resolved = HashMap::new();
    let mut external = Vec::new();
    let mut diagnostics = Vec::new();
    for (path, source) in &files {
        let Some(loader) = Loader::for_path(path) else {
            diagnostics.push(request_error(format!(
                "{path}: not a module (.ts, .tsx, .js, .jsx, .mjs, .mts)"
            )));
            continue;
        };
        let (module, file) = match session.parse(path, source.clone(), loader) {
            Ok(parsed) => parsed,
            Err(errors) => {
                diagnostics.extend(errors);
                continue;
            }
        };
        let file_options = Options {
            loader,
            ..options.clone()
        };
        let (program, _) = session.lower(module, &file_options);
        let Program::Module(mut module) = program else {
            unreachable!("a module stays a module");
        };
        for Specifier {
            text: specifier,
            span,
            dynamic,
        } in specifiers(&module)
        {
            if is_bare(&specifier) {
                external.push(Atom::from(specifier.as_str()));
            } else if let Some(target) = resolve(&files, path, &specifier) {
                if dynamic {
                    // swc's bundler would leave it pointing at a file that
                    // is not served: the bundle is one module.
                    let message = format!(
                        "import(\"{specifier}\") of a file of the bundle: a bundle is one module; import it statically"
                    );
                    diagnostics.push(session.diagnostic(span.lo, message));
                }
                resolved.insert((path.clone(), specifier), target);
            } else if !specifier.contains(':') {
                let message =
                    format!("Could not resolve \"{specifier}\" among the request's files");
                diagnostics.push(session.diagnostic(span.lo, message));
            }
        }
        // The bundler resolves every module again with marks of its own.
        module.visit_mut_with(&mut hygiene());
        module.visit_mut_with(&mut ClearContexts);
        prepared.insert(
            path.clone(),
            ModuleData {
                fm: file,
                module,
                helpers: Helpers::new(false),
            },
        );
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    external.sort();
    external.dedup();

    let globals = Globals::new();
    let config = Config {
        external_modules: external,
        module: ModuleType::Es,
        ..Default::default()
    };
    let loader = Prepared(RefCell::new(prepared));
    let mut bundler = Bundler::new(
        &globals,
        session.cm.clone(),
        &loader,
        Table(resolved),
        config,
        Box::new(ImportMeta),
    );
    let entries = HashMap::from([("entry".to_string(), FileName::Real(entry.clone().into()))]);
    let bundles = GLOBALS
        .set(&globals, || bundler.bundle(entries))
        .map_err(|e| vec![request_error(format!("bundling failed: {e:#}"))])?;
    let mut module = bundles
        .into_iter()
        .find(|b: &Bundle| matches!(b.kind, BundleKind::Named { .. }))
        .ok_or_else(|| vec![request_error("bundling produced no module".into())])?
        .module;
    module.visit_mut_with(&mut ClearContexts);
    hoist_imports(&mut module);
    Ok(module)
}

/// The bundler leaves each file's imports where the file began; they run
/// first wherever they are written, so they are put first, as people
/// write them.
fn hoist_imports(module: &mut Module) {
    let (imports, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut module.body)
        .into_iter()
        .partition(|item| matches!(item, ModuleItem::ModuleDecl(ModuleDecl::Import(_))));
    module.body = imports.into_iter().chain(rest).collect();
}

/// `App.tsx` and `/App.tsx` are the same file; `./a/../b.ts` is `/b.ts`.
fn absolute(path: &str) -> String {
    normalize(&format!("/{}", path.trim_start_matches('/')))
}

fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The file `specifier` names from `from`, trying what TypeScript and
/// bundlers try: the path itself, with an extension, `.js` written for a
/// `.ts` file, and a directory's `index`.
fn resolve(files: &BTreeMap<String, String>, from: &str, specifier: &str) -> Option<String> {
    let base = if specifier.starts_with('/') {
        normalize(specifier)
    } else {
        let dir = from.rsplit_once('/').map_or("", |(dir, _)| dir);
        normalize(&format!("{dir}/{specifier}"))
    };
    let mut candidates = vec![base.clone()];
    for ext in ["ts", "tsx", "js", "jsx", "mjs", "mts"] {
        candidates.push(format!("{base}.{ext}"));
    }
    for (written, actual) in [
        (".js", &[".ts", ".tsx"][..]),
        (".jsx", &[".tsx"]),
        (".mjs", &[".mts"]),
    ] {
        if let Some(stem) = base.strip_suffix(written) {
            candidates.extend(actual.iter().map(|ext| format!("{stem}{ext}")));
        }
    }
    for ext in ["ts", "tsx", "js", "jsx"] {
        candidates.push(format!("{base}/index.{ext}"));
    }
    candidates.into_iter().find(|c| files.contains_key(c))
}

/// A problem of the request as a whole, in no file: line 0.
fn request_error(message: String) -> Diagnostic {
    Diagnostic {
        file: String::new(),
        line: 0,
        column: 0,
        message,
    }
}

/// A module specifier as written, and whether it is an `import()`.
struct Specifier {
    text: String,
    span: Span,
    dynamic: bool,
}

/// The module specifiers `module` imports or re-exports from.
fn specifiers(module: &Module) -> Vec<Specifier> {
    struct Collect(Vec<Specifier>);
    impl Collect {
        fn add(&mut self, src: &Str, dynamic: bool) {
            if let Some(s) = src.value.as_str() {
                self.0.push(Specifier {
                    text: s.to_string(),
                    span: src.span(),
                    dynamic,
                });
            }
        }
    }
    impl Visit for Collect {
        fn visit_import_decl(&mut self, n: &ImportDecl) {
            self.add(&n.src, false);
        }
        fn visit_export_all(&mut self, n: &ExportAll) {
            self.add(&n.src, false);
        }
        fn visit_named_export(&mut self, n: &NamedExport) {
            if let Some(src) = &n.src {
                self.add(src, false);
            }
        }
        fn visit_call_expr(&mut self, n: &CallExpr) {
            n.visit_children_with(self);
            if let (Callee::Import(_), Some(arg)) = (&n.callee, n.args.first())
                && let Expr::Lit(Lit::Str(src)) = &*arg.expr
            {
                self.add(src, true);
            }
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit_with(&mut collect);
    collect.0
}

/// Forgets which binding each identifier was resolved to (names are
/// unique after `hygiene`), so that the next resolver starts afresh.
struct ClearContexts;

impl VisitMut for ClearContexts {
    fn visit_mut_syntax_context(&mut self, ctxt: &mut SyntaxContext) {
        *ctxt = SyntaxContext::empty();
    }
}

/// The modules, parsed and lowered before bundling starts; each is taken
/// once (the bundler keeps what it loaded).
struct Prepared(RefCell<HashMap<String, ModuleData>>);

impl Load for Prepared {
    fn load(&self, file: &FileName) -> anyhow::Result<ModuleData> {
        let FileName::Real(path) = file else {
            return Err(anyhow!("{file} is not one of the request's files"));
        };
        let path = path.to_string_lossy().into_owned();
        self.0
            .borrow_mut()
            .remove(&path)
            .ok_or_else(|| anyhow!("{path} was loaded twice or is not a file of the request"))
    }
}

/// What each relative import resolved to, worked out before bundling.
struct Table(HashMap<(String, String), String>);

impl Resolve for Table {
    fn resolve(&self, base: &FileName, specifier: &str) -> anyhow::Result<Resolution> {
        let FileName::Real(from) = base else {
            return Err(anyhow!("cannot resolve {specifier:?} from {base}"));
        };
        let key = (from.to_string_lossy().into_owned(), specifier.to_string());
        let target = self
            .0
            .get(&key)
            .ok_or_else(|| anyhow!("could not resolve {specifier:?} from {base}"))?;
        Ok(Resolution {
            filename: FileName::Real(PathBuf::from(target)),
            slug: None,
        })
    }
}

/// `import.meta` in a bundled module is the bundle's: its `url` is the
/// bundle's URL.
struct ImportMeta;

impl Hook for ImportMeta {
    fn get_import_meta_props(
        &self,
        span: Span,
        _: &ModuleRecord,
    ) -> anyhow::Result<Vec<KeyValueProp>> {
        let url = Expr::Member(MemberExpr {
            span,
            obj: Box::new(Expr::MetaProp(MetaPropExpr {
                span,
                kind: MetaPropKind::ImportMeta,
            })),
            prop: MemberProp::Ident("url".into()),
        });
        Ok(vec![KeyValueProp {
            key: swc_core::ecma::ast::PropName::Ident("url".into()),
            value: Box::new(url),
        }])
    }
}
