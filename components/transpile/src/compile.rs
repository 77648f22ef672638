//! One module through swc: parse (TypeScript, JSX, decorators), then lower
//! to JavaScript for the target: decorators (legacy or 2023), `using`,
//! TypeScript's own forms (enums, namespaces, parameter properties, type-only
//! imports), JSX, and the syntax newer than the target. Printing is
//! `emit.rs`'s; bundling several modules is `bundle.rs`'s.

use swc_core::common::comments::SingleThreadedComments;
use swc_core::common::{FileName, Mark, SourceFile, SourceMap, Spanned, sync::Lrc};
use swc_core::ecma::ast::{EsVersion, Module, Pass, Program};
use swc_core::ecma::parser::{EsSyntax, Parser, StringInput, Syntax, TsSyntax, lexer::Lexer};
use swc_core::ecma::transforms::base::helpers::{HELPERS, Helpers, inject_helpers};
use swc_core::ecma::transforms::base::resolver;
use swc_core::ecma::transforms::{compat, proposal, react, typescript};

use crate::options::{Decorators, JsxRuntime, Loader, Options};

/// A problem in the source, where it is (1-based line and column, as
/// esbuild and editors count; the column in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    /// `<file>:<line>:<column>: error: <message>`, the form spike.land's
    /// clients parse; only the message for a problem of the request as a
    /// whole (line 0: no place in any file).
    pub fn to_text(&self) -> String {
        if self.line == 0 {
            return self.message.clone();
        }
        format!(
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// 1-based line and column (in characters) of byte `at` of `source`.
pub fn line_and_column(source: &str, at: usize) -> (usize, usize) {
    let before = &source[..at];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// The source files of one request and their comments (JSX pragmas and
/// `/*#__PURE__*/` annotations live there).
pub struct Session {
    pub cm: Lrc<SourceMap>,
    pub comments: SingleThreadedComments,
}

impl Session {
    pub fn new() -> Self {
        Session {
            cm: Default::default(),
            comments: Default::default(),
        }
    }

    /// Where `pos` is, as a diagnostic.
    pub fn diagnostic(&self, pos: swc_core::common::BytePos, message: String) -> Diagnostic {
        let file = self.cm.lookup_source_file(pos);
        let offset = (pos - file.start_pos).0 as usize;
        let (line, column) = line_and_column(&file.src, offset.min(file.src.len()));
        Diagnostic {
            file: file.name.to_string(),
            line,
            column,
            message,
        }
    }

    /// Parses `source` as the module `name`. Every error, the parser's
    /// recovered ones included, in the order of the source.
    pub fn parse(
        &self,
        name: &str,
        source: String,
        loader: Loader,
    ) -> Result<(Module, Lrc<SourceFile>), Vec<Diagnostic>> {
        let file = self
            .cm
            .new_source_file(FileName::Real(name.into()).into(), source);
        let syntax = if loader.is_typescript() {
            Syntax::Typescript(TsSyntax {
                tsx: loader.has_jsx(),
                decorators: true,
                ..Default::default()
            })
        } else {
            Syntax::Es(EsSyntax {
                jsx: loader.has_jsx(),
                decorators: true,
                explicit_resource_management: true,
                ..Default::default()
            })
        };
        let lexer = Lexer::new(
            syntax,
            EsVersion::EsNext,
            StringInput::from(&*file),
            Some(&self.comments),
        );
        let mut parser = Parser::new_from(lexer);
        let parsed = parser.parse_module();
        let mut errors = parser.take_errors();
        let module = match parsed {
            Ok(mut module) if errors.is_empty() => {
                if loader.is_typescript() {
                    crate::const_fold::limit(&mut module).map_err(|at| {
                        let max = crate::const_fold::MAX_FOLDED_OPERATORS;
                        vec![self.diagnostic(
                            at,
                            format!(
                                "an enum member's initializer of more than {max} operators: \
                                 compute it outside the enum"
                            ),
                        )]
                    })?;
                }
                return Ok((module, file));
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        errors.extend(module);
        errors.sort_by_key(|e| e.span().lo);
        let mut diagnostics: Vec<Diagnostic> = errors
            .into_iter()
            .map(|e| self.diagnostic(e.span().lo, e.kind().msg().to_string()))
            .collect();
        // The error that ended the parse is often among the recovered ones
        // too: one report of each.
        diagnostics.dedup();
        Err(diagnostics)
    }

    /// Lowers `module` to JavaScript for `options.target`. Returns the
    /// program and the marks its identifiers were resolved with (the
    /// minifier needs them).
    pub fn lower(&self, module: Module, options: &Options) -> (Program, Marks) {
        let typescript = options.loader.is_typescript();
        let (mut program, marks) = resolve(module, typescript);
        let (unresolved, top_level) = (marks.unresolved, marks.top_level);
        // Helpers (for decorators, `using`, older targets) are inlined in
        // the module: its output must run with no runtime beside it.
        HELPERS.set(&Helpers::new(false), || {
            // Decorators first: legacy ones read the types that the next
            // pass strips.
            match options.decorators {
                Decorators::Legacy => program.mutate(&mut proposal::decorators::decorators(
                    proposal::decorators::Config {
                        legacy: true,
                        emit_metadata: false,
                        use_define_for_class_fields: true,
                    },
                )),
                Decorators::Standard => {
                    program.mutate(&mut proposal::decorator_2023_11::decorator_2023_11())
                }
            }
            if options.target < EsVersion::EsNext {
                program.mutate(
                    &mut proposal::explicit_resource_management::explicit_resource_management(),
                );
            }
            if typescript {
                let config = typescript::Config {
                    verbatim_module_syntax: options.verbatim_module_syntax,
                    native_class_properties: true,
                    ..Default::default()
                };
                // With the classic runtime JSX uses `React` (or the
                // pragma's name): an import of it is not type-only.
                if options.jsx == JsxRuntime::Classic && options.loader.has_jsx() {
                    let tsx = typescript::TsxConfig {
                        pragma: Some("React.createElement".into()),
                        pragma_frag: Some("React.Fragment".into()),
                    };
                    program.mutate(&mut typescript::tsx(
                        self.cm.clone(),
                        config,
                        tsx,
                        &self.comments,
                        unresolved,
                        top_level,
                    ));
                } else {
                    program.mutate(&mut typescript::typescript(config, unresolved, top_level));
                }
            }
            if options.loader.has_jsx() {
                program.mutate(&mut react::react(
                    self.cm.clone(),
                    Some(&self.comments),
                    jsx_options(options),
                    top_level,
                    unresolved,
                ));
            }
            program.mutate(&mut lower_syntax(
                options.target,
                unresolved,
                &self.comments,
            ));
            program.mutate(&mut inject_helpers(unresolved));
        });
        (program, marks)
    }
}

/// The marks `resolver` gave a program's identifiers.
#[derive(Debug, Clone, Copy)]
pub struct Marks {
    pub unresolved: Mark,
    pub top_level: Mark,
}

/// `module` with each identifier resolved to its binding, under fresh marks.
pub fn resolve(module: Module, typescript: bool) -> (Program, Marks) {
    let marks = Marks {
        unresolved: Mark::new(),
        top_level: Mark::new(),
    };
    let mut program = Program::Module(module);
    program.mutate(&mut resolver(marks.unresolved, marks.top_level, typescript));
    (program, marks)
}

fn jsx_options(options: &Options) -> react::Options {
    let runtime = match options.jsx {
        JsxRuntime::Automatic => react::Runtime::Automatic,
        JsxRuntime::Classic => react::Runtime::Classic,
    };
    react::Options {
        runtime: Some(runtime),
        import_source: Some(options.jsx_import_source.as_str().into()),
        ..Default::default()
    }
}

/// The passes that rewrite syntax newer than `target`, newest first.
fn lower_syntax<'a>(
    target: EsVersion,
    unresolved: Mark,
    comments: &'a SingleThreadedComments,
) -> impl Pass + 'a {
    let below = |version: EsVersion| target < version;
    (
        (
            below(EsVersion::Es2022)
                .then(|| compat::es2022::es2022(Default::default(), unresolved)),
            below(EsVersion::Es2021).then(compat::es2021::es2021),
            below(EsVersion::Es2020)
                .then(|| compat::es2020::es2020(Default::default(), unresolved)),
            below(EsVersion::Es2019).then(compat::es2019::es2019),
        ),
        (
            below(EsVersion::Es2018).then(|| compat::es2018::es2018(Default::default())),
            below(EsVersion::Es2017)
                .then(|| compat::es2017::es2017(Default::default(), unresolved)),
            below(EsVersion::Es2016).then(compat::es2016::es2016),
            below(EsVersion::Es2015)
                .then(|| compat::es2015::es2015(unresolved, Some(comments), Default::default())),
        ),
    )
}
