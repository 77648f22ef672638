//! One TypeScript / TSX module to JavaScript with swc: parse, strip the
//! types (enums, namespaces and parameter properties become JavaScript),
//! turn JSX into calls of the automatic runtime, print.

use swc_core::common::comments::SingleThreadedComments;
use swc_core::common::{FileName, GLOBALS, Globals, Mark, SourceMap, Spanned, sync::Lrc};
use swc_core::ecma::ast::{EsVersion, Program};
use swc_core::ecma::codegen::{Emitter, text_writer::JsWriter};
use swc_core::ecma::parser::{Parser, StringInput, Syntax, TsSyntax, lexer::Lexer};
use swc_core::ecma::transforms::base::{fixer::fixer, hygiene::hygiene, resolver};
use swc_core::ecma::transforms::{react, typescript};

/// How to transpile.
pub struct Options {
    /// The file name errors name (`<file>:<line>:<column>: error: …`).
    pub file: String,
    /// Where the automatic JSX runtime is imported from (`react` unless
    /// configured; spike.land used `@emotion/react`).
    pub jsx_import_source: String,
}

/// A syntax error, where it is (1-based line and column, as esbuild and
/// editors count).
#[derive(Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// `source` (TSX) as an ES module of JavaScript (ES2024).
pub fn transpile(source: String, options: &Options) -> Result<String, SyntaxError> {
    let cm: Lrc<SourceMap> = Default::default();
    let file = cm.new_source_file(FileName::Custom(options.file.clone()).into(), source);
    let syntax = Syntax::Typescript(TsSyntax {
        tsx: true,
        decorators: true,
        ..Default::default()
    });
    let lexer = Lexer::new(syntax, EsVersion::Es2024, StringInput::from(&*file), None);
    let mut parser = Parser::new_from(lexer);
    let at = |span: swc_core::common::Span, message: String| {
        let loc = cm.lookup_char_pos(span.lo);
        SyntaxError {
            line: loc.line,
            column: loc.col_display + 1,
            message,
        }
    };
    let module = parser
        .parse_module()
        .map_err(|e| at(e.span(), e.kind().msg().to_string()))?;
    // The parser recovers from some errors; they are errors all the same.
    if let Some(e) = parser.take_errors().into_iter().next() {
        return Err(at(e.span(), e.kind().msg().to_string()));
    }
    let comments = SingleThreadedComments::default();
    GLOBALS.set(&Globals::new(), || {
        let unresolved = Mark::new();
        let top_level = Mark::new();
        let mut program = Program::Module(module);
        program.mutate(&mut resolver(unresolved, top_level, true));
        program.mutate(&mut typescript::typescript(
            Default::default(),
            unresolved,
            top_level,
        ));
        let jsx = react::Options {
            runtime: Some(react::Runtime::Automatic),
            import_source: Some(options.jsx_import_source.as_str().into()),
            ..Default::default()
        };
        program.mutate(&mut react::react(
            cm.clone(),
            Some(&comments),
            jsx,
            top_level,
            unresolved,
        ));
        program.mutate(&mut hygiene());
        program.mutate(&mut fixer(Some(&comments)));
        let mut out = Vec::new();
        let mut emitter = Emitter {
            cfg: swc_core::ecma::codegen::Config::default().with_target(EsVersion::Es2024),
            cm: cm.clone(),
            comments: Some(&comments),
            wr: JsWriter::new(cm.clone(), "\n", &mut out, None),
        };
        emitter
            .emit_program(&program)
            .expect("writing to a vector does not fail");
        Ok(String::from_utf8(out).expect("swc writes UTF-8"))
    })
}

/// The swc crate this component is built with.
pub const SWC_VERSION: &str = "swc_core 83.0.0";
