//! From a lowered program to text: the minifier if asked, renaming so that
//! no two bindings clash, parentheses where precedence needs them, and the
//! code with its source map.

use swc_core::common::{FileName, source_map::SourceMapGenConfig};
use swc_core::ecma::ast::Program;
use swc_core::ecma::codegen::{Config, Emitter, text_writer::JsWriter};
use swc_core::ecma::minifier::optimize;
use swc_core::ecma::minifier::option::{
    CompressOptions, ExtraOptions, MangleOptions, MinifyOptions,
};
use swc_core::ecma::transforms::base::{fixer::fixer, hygiene::hygiene};

use crate::compile::{Marks, Session};
use crate::options::{Options, SourceMaps};

/// The printed module and, for `sourcemap: external`, its map as JSON.
pub struct Output {
    pub code: String,
    pub map: Option<String>,
}

impl Session {
    /// Prints `program`, whose identifiers were resolved with `marks`, for
    /// the options' target, minified and with a source map if they say so.
    pub fn emit(&self, mut program: Program, marks: Marks, how: &Options) -> Output {
        if how.minify {
            let options = MinifyOptions {
                compress: Some(CompressOptions {
                    module: true,
                    ..Default::default()
                }),
                mangle: Some(MangleOptions::default()),
                ..Default::default()
            };
            let extra = ExtraOptions {
                unresolved_mark: marks.unresolved,
                top_level_mark: marks.top_level,
                mangle_name_cache: None,
            };
            program = optimize(
                program,
                self.cm.clone(),
                Some(&self.comments),
                None,
                &options,
                &extra,
            );
        }
        program.mutate(&mut hygiene());
        program.mutate(&mut fixer(Some(&self.comments)));

        let mut code = Vec::new();
        let mut mappings = Vec::new();
        let wants_map = how.sourcemap != SourceMaps::None;
        {
            let writer = JsWriter::new(
                self.cm.clone(),
                "\n",
                &mut code,
                wants_map.then_some(&mut mappings),
            );
            let mut emitter = Emitter {
                cfg: Config::default()
                    .with_target(how.target)
                    .with_minify(how.minify),
                cm: self.cm.clone(),
                // A minified module keeps no comments (and so no licences:
                // as esbuild's `minify` with `legalComments: none`).
                comments: (!how.minify).then_some(&self.comments as _),
                wr: writer,
            };
            emitter
                .emit_program(&program)
                .expect("writing to a vector does not fail");
        }
        let mut code = String::from_utf8(code).expect("swc writes UTF-8");
        if !wants_map {
            return Output { code, map: None };
        }
        let map = self.cm.build_source_map(&mappings, None, MapConfig);
        match how.sourcemap {
            SourceMaps::Inline => {
                let url = map.to_data_url().expect("a source map encodes");
                if !code.ends_with('\n') {
                    code.push('\n');
                }
                code.push_str("//# sourceMappingURL=");
                code.push_str(&url);
                code.push('\n');
                Output { code, map: None }
            }
            _ => {
                let mut json = Vec::new();
                map.to_writer(&mut json).expect("a source map encodes");
                let json = String::from_utf8(json).expect("a source map is UTF-8");
                Output {
                    code,
                    map: Some(json),
                }
            }
        }
    }
}

/// Source maps name each file by its path in the request and carry its
/// text, so that a map stands alone.
struct MapConfig;

impl SourceMapGenConfig for MapConfig {
    fn file_name_to_source(&self, f: &FileName) -> String {
        f.to_string()
    }

    fn inline_sources_content(&self, _: &FileName) -> bool {
        true
    }
}
