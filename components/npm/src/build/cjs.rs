//! A CommonJS module as an ES module, as Node imports one: its code runs
//! once, in a function given `exports`, `require`, `module`, `__filename`
//! and `__dirname` (and `this` = `module.exports`); the default export is
//! `module.exports`, and the names a static scan finds are named exports
//! (their values as the code left them). Each `require("…")` of a string
//! becomes an `import` run before the module, so `require` hands back
//! what was imported: a converted module's `module.exports` (its export
//! named "module.exports", as Node's `require` of an ES module reads it
//! too), or an ES module's namespace marked `__esModule` as bundlers do.
//!
//! A `require` of a Node built-in that runs whatever happens makes the
//! module unbuildable (422); one under a condition (in a `try`, a branch,
//! a function) throws only if it runs.

use std::collections::BTreeSet;
use std::fmt::Write;

use spike_sdk::router::HttpError;
use swc_core::ecma::ast::{ModuleItem, Program, Script};

use super::esm::{needs_builtin, point_imports, prelude, written};
use super::{Kind, Parsed, parse, read_source, scan};
use crate::package::File;
use crate::resolve::{Build, Resolved};

/// How deep `module.exports = require("./x")` chains are followed for
/// names.
const MAX_REEXPORT_DEPTH: usize = 8;

pub fn build(build: &Build, path: &str, parsed: &mut Parsed) -> Result<String, HttpError> {
    let names = names_of(build, path, parsed, 0, &mut BTreeSet::new())?;
    let requires = scan::requires(&parsed.program, parsed.unresolved);
    let mut imports: Vec<(String, Resolved)> = Vec::new();
    let mut builtins = BTreeSet::new();
    for require in &requires {
        let seen = imports.iter().any(|(s, _)| *s == require.specifier);
        if seen || builtins.contains(&require.specifier) {
            continue;
        }
        match build.resolve(path, &require.specifier)? {
            Resolved::Builtin(name) => {
                // One that runs whatever happens: the module cannot run.
                let specifier = &require.specifier;
                if requires
                    .iter()
                    .any(|r| r.specifier == *specifier && !r.guarded)
                {
                    return Err(needs_builtin(build, path, &name));
                }
                builtins.insert(specifier.clone());
            }
            resolved => {
                build.reach(&resolved);
                imports.push((require.specifier.clone(), resolved));
            }
        }
    }
    point_imports(build, path, parsed)?;
    as_script(&mut parsed.program);
    let body = parsed.print();
    Ok(wrap(
        build, path, parsed, &imports, &builtins, &names, &body,
    ))
}

/// A module without `import` or `export` parsed as one, as the script it is.
fn as_script(program: &mut Program) {
    if let Program::Module(module) = program {
        let body = std::mem::take(&mut module.body)
            .into_iter()
            .filter_map(|item| match item {
                ModuleItem::Stmt(stmt) => Some(stmt),
                ModuleItem::ModuleDecl(_) => None,
            })
            .collect();
        *program = Program::Script(Script {
            span: module.span,
            body,
            shebang: None,
        });
    }
    if let Program::Script(script) = program {
        script.shebang = None;
    }
}

/// The names module `path` exports, with those of the modules it
/// re-exports whole (within the package; simplified first, so that only
/// the branch `NODE_ENV` takes counts).
fn names_of(
    build: &Build,
    path: &str,
    parsed: &mut Parsed,
    depth: usize,
    seen: &mut BTreeSet<String>,
) -> Result<BTreeSet<String>, HttpError> {
    // esbuild's `0 && (module.exports = {…})` hint does not outlive the
    // simplifier: names are read before it too.
    let before = scan::exports(&parsed.program, parsed.unresolved);
    parsed.simplify();
    let after = scan::exports(&parsed.program, parsed.unresolved);
    let mut names: BTreeSet<String> = before.names.into_iter().chain(after.names).collect();
    if depth >= MAX_REEXPORT_DEPTH {
        return Ok(names);
    }
    for specifier in after.reexports {
        if let Resolved::Url(_) = build.resolve(path, &specifier)?
            && (specifier.starts_with("./") || specifier.starts_with("../"))
        {
            let dir = path
                .rsplit_once('/')
                .map_or(String::new(), |(d, _)| format!("{d}/"));
            let target = crate::package::normalize(&dir, &specifier).ok();
            if let Some(File::Path(file)) =
                target.and_then(|t| build.manifest.file(build.files, &t).ok())
                && seen.insert(file.clone())
            {
                names.extend(export_names(build, &file, depth + 1, seen)?);
            }
        }
    }
    Ok(names)
}

/// The names file `path` exports, if it is CommonJS (for a re-export).
pub fn export_names(
    build: &Build,
    path: &str,
    depth: usize,
    seen: &mut BTreeSet<String>,
) -> Result<BTreeSet<String>, HttpError> {
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    if !matches!(extension, "js" | "cjs") {
        return Ok(BTreeSet::new());
    }
    let source = read_source(build, path)?;
    let mut parsed = parse(build, path, source, extension)?;
    if parsed.kind != Kind::CommonJs {
        return Ok(BTreeSet::new());
    }
    names_of(build, path, &mut parsed, depth, seen)
}

/// The ES module around the CommonJS `body`.
fn wrap(
    build: &Build,
    path: &str,
    parsed: &Parsed,
    imports: &[(String, Resolved)],
    builtins: &BTreeSet<String>,
    names: &BTreeSet<String>,
    body: &str,
) -> String {
    let mut out = String::new();
    let mut entries = Vec::new();
    for (i, (specifier, resolved)) in imports.iter().enumerate() {
        let value = match resolved {
            Resolved::Empty => "null".to_string(),
            other => {
                let _ = writeln!(
                    out,
                    "import * as __spike_r{i} from {};",
                    js_string(&written(other))
                );
                format!("__spike_r{i}")
            }
        };
        entries.push(format!("[{}, {value}]", js_string(specifier)));
    }
    out.push_str(&prelude(build, parsed));
    let builtins: Vec<String> = builtins.iter().map(|b| js_string(b)).collect();
    let _ = write!(
        out,
        "const __spike_modules = new Map([{}]);\n\
         const __spike_builtins = new Set([{}]);\n{REQUIRE}",
        entries.join(", "),
        builtins.join(", "),
    );
    let filename = format!("/node_modules/{}/{path}", build.name);
    let dirname = filename
        .rsplit_once('/')
        .map_or("/", |(d, _)| d)
        .to_string();
    let _ = write!(
        out,
        "const __spike_module = {{ exports: {{}} }};\n\
         (function (exports, require, module, __filename, __dirname) {{\n{body}\n}}).call(\
         __spike_module.exports, __spike_module.exports, __spike_require, __spike_module, {}, {});\n\
         const __spike_exports = __spike_module.exports;\n\
         export {{ __spike_exports as default, __spike_exports as \"module.exports\" }};\n",
        js_string(&filename),
        js_string(&dirname),
    );
    let named: Vec<&String> = names.iter().filter(|n| is_exportable(n)).collect();
    if !named.is_empty() {
        let pattern: Vec<String> = named
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}: __spike_e{i}"))
            .collect();
        let list: Vec<String> = named
            .iter()
            .enumerate()
            .map(|(i, n)| format!("__spike_e{i} as {n}"))
            .collect();
        let _ = write!(
            out,
            "const {{ {} }} = __spike_exports ?? {{}};\nexport {{ {} }};\n",
            pattern.join(", "),
            list.join(", ")
        );
    }
    out
}

/// What `require` does in a converted module.
const REQUIRE: &str = r#"const __spike_required = new Map();
function __spike_require(specifier) {
  if (__spike_required.has(specifier)) return __spike_required.get(specifier);
  if (!__spike_modules.has(specifier)) {
    throw new Error(__spike_builtins.has(specifier)
      ? `the Node built-in "${specifier}" is not available in a browser`
      : `Cannot find module '${specifier}'`);
  }
  const ns = __spike_modules.get(specifier);
  const value = ns === null ? {}
    : "module.exports" in ns ? ns["module.exports"]
    : Object.defineProperty(Object.assign({}, ns), "__esModule", { value: true });
  __spike_required.set(specifier, value);
  return value;
}
"#;

/// `s` as a JavaScript string literal.
fn js_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Whether `name` can be a named export written as an identifier.
fn is_exportable(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "default",
        "break",
        "case",
        "catch",
        "class",
        "const",
        "continue",
        "debugger",
        "delete",
        "do",
        "else",
        "enum",
        "export",
        "extends",
        "false",
        "finally",
        "for",
        "function",
        "if",
        "import",
        "in",
        "instanceof",
        "new",
        "null",
        "return",
        "super",
        "switch",
        "this",
        "throw",
        "true",
        "try",
        "typeof",
        "var",
        "void",
        "while",
        "with",
        "yield",
        "let",
        "static",
        "implements",
        "interface",
        "package",
        "private",
        "protected",
        "public",
        "await",
        "arguments",
        "eval",
    ];
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !RESERVED.contains(&name)
}
