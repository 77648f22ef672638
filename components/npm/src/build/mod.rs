//! One file of a package built into a browser ES module with swc: parsed
//! (as an ES module, or as a CommonJS script), `process.env.NODE_ENV`
//! replaced and the branches it decides dropped, its imports or requires
//! pointed at the URLs `resolve` gives, and printed. An ES module keeps
//! its code (`esm.rs`); a CommonJS module is wrapped (`cjs.rs`); a JSON
//! file becomes a module whose default export is its value.

mod cjs;
mod esm;
mod scan;

use spike_sdk::router::HttpError;
use swc_core::common::comments::{Comments, SingleThreadedComments};
use swc_core::common::{
    FileName, GLOBALS, Globals, Mark, SourceMap, Spanned, SyntaxContext, sync::Lrc,
};
use swc_core::ecma::ast::{EsVersion, Expr, Lit, MemberExpr, MemberProp, Program, Str};
use swc_core::ecma::codegen::{Config as CodegenConfig, Emitter, text_writer::JsWriter};
use swc_core::ecma::parser::{EsSyntax, Parser, StringInput, Syntax, lexer::Lexer};
use swc_core::ecma::transforms::base::{fixer::fixer, resolver};
use swc_core::ecma::transforms::optimization::simplify::{dead_branch_remover, expr_simplifier};
use swc_core::ecma::visit::{VisitMut, VisitMutWith, visit_mut_pass};

use crate::package::File;
use crate::resolve::{Build, unbuildable};

pub use cjs::export_names;

/// The module an empty replacement (`"browser": {"x": false}`) is.
pub const EMPTY_MODULE: &str =
    "const empty = {};\nexport { empty as default, empty as \"module.exports\" };\n";

/// The module `file` of the package becomes.
pub fn module(build: &Build, file: &File) -> Result<String, HttpError> {
    let path = match file {
        File::Empty => return Ok(EMPTY_MODULE.to_string()),
        File::Path(path) => path,
    };
    let source = read_source(build, path)?;
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    match extension {
        "json" => json_module(build, path, &source),
        "js" | "mjs" | "cjs" => GLOBALS.set(&Globals::new(), || {
            js_module(build, path, source, extension)
        }),
        "node" => Err(native_addon(build)),
        _ => Err(unbuildable(format!(
            "{}: `{path}` is not a JavaScript module (.{extension})",
            build.label()
        ))),
    }
}

/// A package that holds a compiled Node addon cannot run in a browser.
pub fn native_addon(build: &Build) -> HttpError {
    unbuildable(format!(
        "{} is a native addon (compiled code for Node), which browsers cannot run",
        build.label()
    ))
}

/// The text of file `path`, within the size limit.
pub fn read_source(build: &Build, path: &str) -> Result<String, HttpError> {
    let bytes = build
        .files
        .read(path)?
        .ok_or_else(|| unbuildable(format!("{}: no file `{path}`", build.label())))?;
    if bytes.len() > build.config.max_module_bytes {
        return Err(unbuildable(format!(
            "{}: `{path}` is larger than MAX_MODULE_MIB",
            build.label()
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| unbuildable(format!("{}: `{path}` is not UTF-8", build.label())))
}

fn json_module(build: &Build, path: &str, source: &str) -> Result<String, HttpError> {
    serde_json::from_str::<serde::de::IgnoredAny>(source)
        .map_err(|e| unbuildable(format!("{}: `{path}` is not JSON: {e}", build.label())))?;
    Ok(format!(
        "const json = {};\nexport {{ json as default, json as \"module.exports\" }};\n",
        source.trim()
    ))
}

/// Which module system a file is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Esm,
    CommonJs,
}

/// A parsed file and what swc keeps beside it.
pub struct Parsed {
    pub cm: Lrc<SourceMap>,
    pub comments: SingleThreadedComments,
    pub program: Program,
    pub kind: Kind,
    pub unresolved: SyntaxContext,
}

fn js_module(
    build: &Build,
    path: &str,
    source: String,
    extension: &str,
) -> Result<String, HttpError> {
    let mut parsed = parse(build, path, source, extension)?;
    match parsed.kind {
        Kind::Esm => esm::build(build, path, &mut parsed),
        Kind::CommonJs => cjs::build(build, path, &mut parsed),
    }
}

/// `source` parsed, its identifiers resolved, `NODE_ENV` put in.
pub fn parse(
    build: &Build,
    path: &str,
    source: String,
    extension: &str,
) -> Result<Parsed, HttpError> {
    let cm: Lrc<SourceMap> = Default::default();
    let comments = SingleThreadedComments::default();
    let file = cm.new_source_file(FileName::Custom(path.to_string()).into(), source);
    let syntax = Syntax::Es(EsSyntax {
        allow_return_outside_function: true,
        allow_super_outside_method: false,
        explicit_resource_management: true,
        ..Default::default()
    });
    let lexer = Lexer::new(
        syntax,
        EsVersion::EsNext,
        StringInput::from(&*file),
        Some(&comments),
    );
    let mut parser = Parser::new_from(lexer);
    let parsed = match extension {
        "mjs" => parser.parse_module().map(Program::Module),
        "cjs" => parser.parse_script().map(Program::Script),
        _ => parser.parse_program(),
    };
    let program = parsed.map_err(|e| {
        let at = e.span().lo;
        let offset = (at - file.start_pos).0 as usize;
        let line = file.src[..offset.min(file.src.len())].matches('\n').count() + 1;
        unbuildable(format!(
            "{}: `{path}` does not parse (line {line}): {}",
            build.label(),
            e.kind().msg()
        ))
    })?;
    let kind = match &program {
        Program::Module(m) if m.body.iter().any(|item| item.is_module_decl()) => Kind::Esm,
        Program::Module(_) if build.manifest.is_module_type() || extension == "mjs" => Kind::Esm,
        _ => Kind::CommonJs,
    };
    let unresolved_mark = Mark::new();
    let mut program = program;
    program.mutate(&mut resolver(unresolved_mark, Mark::new(), false));
    let unresolved = SyntaxContext::empty().apply_mark(unresolved_mark);
    program.mutate(&mut visit_mut_pass(NodeEnv {
        value: build.options.node_env(),
        unresolved,
    }));
    Ok(Parsed {
        cm,
        comments,
        program,
        kind,
        unresolved,
    })
}

impl Parsed {
    /// Drops what `NODE_ENV` (and any other constant) decides, as bundlers
    /// do, so that a production build imports no development code.
    pub fn simplify(&mut self) {
        let mark = self.unresolved.outer();
        for _ in 0..2 {
            self.program
                .mutate(&mut expr_simplifier(mark, Default::default()));
            self.program.mutate(&mut dead_branch_remover(mark));
        }
    }

    /// The program printed, with its licence comments (`/*!`, `@license`,
    /// `@preserve`) and no others.
    pub fn print(&mut self) -> String {
        self.program.mutate(&mut fixer(None));
        let (mut leading, mut trailing) = self.comments.borrow_all_mut();
        for list in leading.values_mut().chain(trailing.values_mut()) {
            list.retain(|c| {
                c.text.starts_with('!')
                    || c.text.contains("@license")
                    || c.text.contains("@preserve")
            });
        }
        drop((leading, trailing));
        let mut code = Vec::new();
        {
            let mut emitter = Emitter {
                cfg: CodegenConfig::default().with_target(EsVersion::EsNext),
                cm: self.cm.clone(),
                comments: Some(&self.comments as &dyn Comments),
                wr: JsWriter::new(self.cm.clone(), "\n", &mut code, None),
            };
            emitter
                .emit_program(&self.program)
                .expect("writing to a vector does not fail");
        }
        String::from_utf8(code).expect("swc writes UTF-8")
    }
}

/// `process.env.NODE_ENV` (with the global `process`) as a string.
struct NodeEnv {
    value: &'static str,
    unresolved: SyntaxContext,
}

impl VisitMut for NodeEnv {
    fn visit_mut_expr(&mut self, expr: &mut Expr) {
        if let Expr::Member(MemberExpr { obj, prop, span }) = expr
            && member_name(prop) == Some("NODE_ENV")
            && let Expr::Member(env) = &**obj
            && member_name(&env.prop) == Some("env")
            && matches!(&*env.obj, Expr::Ident(i) if i.sym == "process" && i.ctxt == self.unresolved)
        {
            *expr = Expr::Lit(Lit::Str(Str {
                span: *span,
                value: self.value.into(),
                raw: None,
            }));
            return;
        }
        expr.visit_mut_children_with(self);
    }
}

fn member_name(prop: &MemberProp) -> Option<&str> {
    match prop {
        MemberProp::Ident(i) => Some(&i.sym),
        MemberProp::Computed(c) => match &*c.expr {
            Expr::Lit(Lit::Str(s)) => s.value.as_str(),
            _ => None,
        },
        MemberProp::PrivateName(_) => None,
    }
}

/// What a browser module needs in place of Node's `process` (only if it
/// uses it): its environment, and that it runs in a browser.
pub fn process_shim(node_env: &str) -> String {
    format!(
        "{{ env: {{ NODE_ENV: \"{node_env}\" }}, browser: true, platform: \"browser\", \
         version: \"\", versions: {{}}, argv: [], cwd: () => \"/\", \
         nextTick: (f, ...args) => queueMicrotask(() => f(...args)) }}"
    )
}
