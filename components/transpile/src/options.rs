//! What a request asks for: the options of the JSON mode, with the
//! defaults spike.land's clients expect from esbuild (loader `tsx`, ES
//! module, target `es2024`, the automatic JSX runtime, no minification).

use std::collections::BTreeMap;

use serde::Deserialize;
use swc_core::ecma::ast::EsVersion;

use crate::import_map::ImportMap;

/// How a file is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loader {
    Ts,
    Tsx,
    Js,
    Jsx,
}

impl Loader {
    /// The loader a file's extension implies (`/utils.ts` is TypeScript).
    pub fn for_path(path: &str) -> Option<Loader> {
        let ext = path.rsplit_once('.')?.1;
        Some(match ext {
            "ts" | "mts" | "cts" => Loader::Ts,
            "tsx" => Loader::Tsx,
            "js" | "mjs" | "cjs" => Loader::Js,
            "jsx" => Loader::Jsx,
            _ => return None,
        })
    }

    pub fn extension(self) -> &'static str {
        match self {
            Loader::Ts => "ts",
            Loader::Tsx => "tsx",
            Loader::Js => "js",
            Loader::Jsx => "jsx",
        }
    }

    pub fn is_typescript(self) -> bool {
        matches!(self, Loader::Ts | Loader::Tsx)
    }

    pub fn has_jsx(self) -> bool {
        matches!(self, Loader::Tsx | Loader::Jsx)
    }
}

/// How JSX becomes JavaScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsxRuntime {
    /// `jsx()` calls imported from `<jsxImportSource>/jsx-runtime`.
    Automatic,
    /// `React.createElement` calls.
    Classic,
}

/// Which decorators the source has: TypeScript's
/// `experimentalDecorators` (`legacy`) or the standard ones (`2023`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Decorators {
    #[serde(rename = "legacy")]
    Legacy,
    #[serde(rename = "2023")]
    Standard,
}

/// Where the source map goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMaps {
    None,
    /// A `//# sourceMappingURL=data:…` comment at the end of the code.
    Inline,
    /// The `map` field of the answer.
    External,
}

/// Everything that decides the output, resolved against the defaults.
/// Its `Debug` form is part of the cache key, so every field counts.
#[derive(Debug, Clone)]
pub struct Options {
    pub loader: Loader,
    pub jsx: JsxRuntime,
    pub jsx_import_source: String,
    pub target: EsVersion,
    pub sourcemap: SourceMaps,
    pub minify: bool,
    pub decorators: Decorators,
    /// Keep imports and exports that are used only as types unless
    /// written `import type` (TypeScript's `verbatimModuleSyntax`).
    pub verbatim_module_syntax: bool,
    /// Rewrite bare specifiers through this map.
    pub imports: Option<ImportMap>,
}

impl Options {
    /// The defaults, with the JSX import source configured for the plugin.
    pub fn defaults(jsx_import_source: String) -> Self {
        Options {
            loader: Loader::Tsx,
            jsx: JsxRuntime::Automatic,
            jsx_import_source,
            target: EsVersion::Es2024,
            sourcemap: SourceMaps::None,
            minify: false,
            decorators: Decorators::Standard,
            verbatim_module_syntax: false,
            imports: None,
        }
    }
}

/// A JSON-mode request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JsonRequest {
    /// One module's source.
    pub code: Option<String>,
    /// Several modules by path, bundled from `entry`.
    pub files: Option<BTreeMap<String, String>>,
    pub entry: Option<String>,
    pub loader: Option<Loader>,
    pub jsx: Option<JsxRuntime>,
    pub jsx_import_source: Option<String>,
    pub target: Option<String>,
    pub sourcemap: Option<SourceMaps>,
    pub minify: Option<bool>,
    pub decorators: Option<Decorators>,
    pub verbatim_module_syntax: Option<bool>,
    /// `true` for the plugin's configured import map, or a map of its own.
    pub import_map: Option<ImportMapOption>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ImportMapOption {
    Configured(bool),
    Given {
        #[serde(default)]
        imports: BTreeMap<String, String>,
        cdn: Option<String>,
    },
}

/// What to compile: one module, or several bundled from an entry.
pub enum Input {
    Module(String),
    Bundle {
        files: BTreeMap<String, String>,
        entry: String,
    },
}

impl JsonRequest {
    /// Whether the request asks for the plugin's configured import map.
    pub fn wants_configured_map(&self) -> bool {
        matches!(self.import_map, Some(ImportMapOption::Configured(true)))
    }

    /// The input and the options, or why the request is malformed.
    /// `configured` is the plugin's import map, loaded if the request
    /// wants it; `origin` the caller's `TR_ORIGIN`.
    pub fn resolve(
        self,
        mut options: Options,
        configured: Option<ImportMap>,
        origin: &str,
    ) -> Result<(Input, Options), String> {
        if let Some(loader) = self.loader {
            options.loader = loader;
        }
        if let Some(jsx) = self.jsx {
            options.jsx = jsx;
        }
        if let Some(source) = self.jsx_import_source {
            if source.trim().is_empty() {
                return Err("jsxImportSource must not be empty".into());
            }
            options.jsx_import_source = source;
        }
        if let Some(target) = self.target {
            options.target = parse_target(&target)?;
        }
        if let Some(maps) = self.sourcemap {
            options.sourcemap = maps;
        }
        options.minify = self.minify.unwrap_or(false);
        if let Some(decorators) = self.decorators {
            options.decorators = decorators;
        }
        options.verbatim_module_syntax = self.verbatim_module_syntax.unwrap_or(false);
        options.imports = match self.import_map {
            None | Some(ImportMapOption::Configured(false)) => None,
            Some(ImportMapOption::Configured(true)) => configured,
            Some(ImportMapOption::Given { imports, cdn }) => {
                Some(ImportMap::new(imports, cdn, origin.to_string())?)
            }
        };
        let input = match (self.code, self.files) {
            (Some(code), None) => Input::Module(code),
            (None, Some(files)) => {
                let entry = self.entry.ok_or("`files` needs an `entry`")?;
                Input::Bundle { files, entry }
            }
            (Some(_), Some(_)) => return Err("give either `code` or `files`, not both".into()),
            (None, None) => return Err("give `code` (one module) or `files` and `entry`".into()),
        };
        Ok((input, options))
    }
}

/// `es2015` … `es2024`, `esnext`, as esbuild names them.
fn parse_target(target: &str) -> Result<EsVersion, String> {
    Ok(match target.to_ascii_lowercase().as_str() {
        "es2015" | "es6" => EsVersion::Es2015,
        "es2016" => EsVersion::Es2016,
        "es2017" => EsVersion::Es2017,
        "es2018" => EsVersion::Es2018,
        "es2019" => EsVersion::Es2019,
        "es2020" => EsVersion::Es2020,
        "es2021" => EsVersion::Es2021,
        "es2022" => EsVersion::Es2022,
        "es2023" => EsVersion::Es2023,
        "es2024" => EsVersion::Es2024,
        "esnext" => EsVersion::EsNext,
        _ => {
            return Err(format!(
                "unknown target {target:?}: es2015 to es2024, or esnext"
            ));
        }
    })
}

impl Input {
    /// What the cache key hashes of the input: the source, or the entry
    /// and every path with its source (`cache::key` adds each length).
    pub fn parts(&self) -> Vec<&[u8]> {
        match self {
            Input::Module(code) => vec![code.as_bytes()],
            Input::Bundle { files, entry } => std::iter::once(entry.as_bytes())
                .chain(
                    files
                        .iter()
                        .flat_map(|(path, source)| [path.as_bytes(), source.as_bytes()]),
                )
                .collect(),
        }
    }
}
