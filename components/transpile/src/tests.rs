//! Golden tests, run natively (`cargo test -p transpile`): each output is
//! run by Node and its behaviour asserted, so a test fails on wrong
//! JavaScript, not only on different text.

use crate::options::{Decorators, Input, JsonRequest, JsxRuntime, Options, SourceMaps};

fn defaults() -> Options {
    Options::defaults("react".into())
}

fn compile(code: &str, options: &Options) -> String {
    match crate::run(Input::Module(code.into()), options) {
        Ok(out) => out.code,
        Err(d) => panic!("{d:?}\n{code}"),
    }
}

fn json_request(json: &str) -> (Input, Options) {
    let request: JsonRequest = serde_json::from_str(json).unwrap();
    request.resolve(defaults(), None, "").unwrap()
}

/// Runs `module` as an ES module in Node with `main` (a module that
/// imports it as `./out.mjs`) and returns what `main` prints.
fn node(module: &str, main: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("out.mjs"), module).unwrap();
    std::fs::write(dir.path().join("main.mjs"), main).unwrap();
    let out = std::process::Command::new("node")
        .arg(dir.path().join("main.mjs"))
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}\n--- module:\n{module}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What `node` prints for `JSON.stringify(<expr>)` with the module's
/// exports as `m`.
fn eval(module: &str, expr: &str) -> String {
    node(
        module,
        &format!("import * as m from './out.mjs';\nconsole.log(JSON.stringify({expr}));\n"),
    )
}

#[test]
fn typescript_forms_become_javascript_that_behaves_alike() {
    let ts = r#"
export enum Color { Red, Green = "g", Blue = 4 }
const enum Size { Big = 2 }
export namespace Names { export const first = "ann"; export function shout(s: string) { return s.toUpperCase(); } }
export class Point { constructor(private readonly x: number, public y?: number) {} sum(): number { return this.x + (this.y ?? 0); } }
export const total = ({ a: 1 } satisfies Record<string, number>).a + Size.Big;
export class Box { accessor value = 3; }
export function disposed(): string[] {
  const log: string[] = [];
  { using r = { [Symbol.dispose]() { log.push("disposed"); } }; log.push("used"); }
  return log;
}
"#;
    let code = compile(ts, &defaults());
    assert!(!code.contains("Size"), "a const enum is inlined:\n{code}");
    let got = eval(
        &code,
        "[m.Color.Red, m.Color[0], m.Color.Green, m.Names.shout(m.Names.first), new m.Point(1, 2).sum(), m.total, (() => { const b = new m.Box(); b.value = 7; return b.value })(), m.disposed()]",
    );
    assert_eq!(got, r#"[0,"Red","g","ANN",3,3,7,["used","disposed"]]"#);
}

#[test]
fn type_only_imports_go_unless_verbatim_module_syntax_keeps_them() {
    let ts = "import { T } from './t';\nimport type { U } from './u';\nexport type { V } from './v';\nlet x: T | U;\nexport const a = 1;\n";
    let elided = compile(ts, &defaults());
    assert!(!elided.contains("import"), "{elided}");
    let verbatim = Options {
        verbatim_module_syntax: true,
        ..defaults()
    };
    let kept = compile(ts, &verbatim);
    assert!(kept.contains("import { T } from './t'"), "{kept}");
    assert!(!kept.contains("./u") && !kept.contains("./v"), "{kept}");
}

#[test]
fn decorators_legacy_and_2023() {
    let standard = r#"
const seen: string[] = [];
function tag(value: any, context: ClassMethodDecoratorContext | ClassDecoratorContext) { seen.push(context.kind + ":" + String(context.name)); }
@tag export class A { @tag m() { return 1; } }
export { seen };
"#;
    let code = compile(standard, &defaults());
    assert!(!code.contains("@tag"), "{code}");
    assert_eq!(eval(&code, "m.seen"), r#"["method:m","class:A"]"#);

    let legacy = r#"
const seen: string[] = [];
function tag(target: any, key?: string) { seen.push(key ?? target.name); }
@tag export class A { @tag m() { return 1; } }
export { seen };
"#;
    let options = Options {
        decorators: Decorators::Legacy,
        ..defaults()
    };
    let code = compile(legacy, &options);
    assert_eq!(eval(&code, "m.seen"), r#"["m","A"]"#);
}

#[test]
fn jsx_automatic_with_its_import_source_or_classic() {
    let tsx = "export const App = ({ n }: { n: number }) => <><p className=\"x\">{n}</p></>;";
    let emotion = Options::defaults("@emotion/react".into());
    let code = compile(tsx, &emotion);
    assert!(
        code.contains(r#"from "@emotion/react/jsx-runtime""#),
        "{code}"
    );
    let classic = Options {
        jsx: JsxRuntime::Classic,
        ..defaults()
    };
    let code = compile(&format!("import React from 'react';\n{tsx}"), &classic);
    assert!(
        code.contains("React.createElement(React.Fragment"),
        "{code}"
    );
    assert!(code.contains("import React from 'react'"), "{code}");
}

#[test]
fn older_targets_are_lowered() {
    let (input, options) = json_request(
        r#"{"code": "export const f = (o?: {a?: number}) => o?.a ?? 2 ** 3; export class C { #p = 1; static s = 2; get p() { return this.#p } }", "target": "es2015"}"#,
    );
    let code = crate::run(input, &options).unwrap().code;
    for newer in ["?.", "??", "**", "#p", "static s"] {
        assert!(!code.contains(newer), "{newer} in\n{code}");
    }
    assert_eq!(
        eval(&code, "[m.f(), m.f({a: 1}), new m.C().p, m.C.s]"),
        "[8,1,1,2]"
    );
}

#[test]
fn files_are_bundled_from_the_entry() {
    let (input, options) = json_request(
        r#"{"entry": "/main.ts", "files": {
            "/main.ts": "import { add } from './math/add.js';\nimport { twice } from './twice';\nimport * as sizes from './sizes';\nexport const result: number = twice(add(1, 2)) + sizes.big;\nexport { twice };",
            "/math/add.ts": "export const add = (a: number, b: number) => a + b;\nexport const unusedExport = 'dropped';",
            "/twice/index.ts": "import { add } from '../math/add';\nexport function twice(n: number) { return add(n, n); }",
            "/sizes.ts": "export const big = 100;"
        }}"#,
    );
    let code = crate::run(input, &options).unwrap().code;
    assert!(!code.contains("import"), "no imports are left:\n{code}");
    assert!(
        !code.contains("dropped"),
        "unused exports are dropped:\n{code}"
    );
    assert_eq!(eval(&code, "[m.result, m.twice(4)]"), "[106,8]");
}

#[test]
fn bundling_keeps_bare_imports_and_rewrites_them_through_an_import_map() {
    let (input, options) = json_request(
        r#"{"entry": "App.tsx", "importMap": {"imports": {"react": "https://x.test/react.mjs"}}, "files": {
            "App.tsx": "import { useState } from 'react';\nimport { label } from './label';\nexport const App = () => { const [n] = useState(0); return <p>{label(n)}</p>; };",
            "label.ts": "import { format } from 'date-fns/format';\nexport const label = (n: number) => format(n) + '!';"
        }}"#,
    );
    let code = crate::run(input, &options).unwrap().code;
    assert!(
        code.contains(r#"from "https://x.test/react.mjs""#),
        "{code}"
    );
    assert!(
        code.contains(r#"from "https://esm.sh/date-fns/format""#),
        "{code}"
    );
    assert!(
        code.contains(r#"from "https://esm.sh/react/jsx-runtime""#),
        "{code}"
    );
    let first_statement = code.lines().next().unwrap();
    assert!(
        first_statement.starts_with("import"),
        "imports come first:\n{code}"
    );
}

#[test]
fn a_missing_file_and_a_syntax_error_are_diagnostics_with_places() {
    let (input, options) = json_request(
        r#"{"entry": "/a.ts", "files": {"/a.ts": "import { b } from './b';\nimport { c } from './nowhere';\nexport const a = b + c;", "/b.ts": "export const b =\n  ;"}}"#,
    );
    let diagnostics = crate::run(input, &options).err().unwrap();
    let places: Vec<_> = diagnostics
        .iter()
        .map(|d| (d.file.as_str(), d.line, d.column))
        .collect();
    assert_eq!(
        places,
        [("/a.ts", 2, 19), ("/b.ts", 2, 3)],
        "{diagnostics:?}"
    );
}

#[test]
fn minify_keeps_behaviour_and_shrinks() {
    let ts = "export function area(width: number, height: number): number {\n  const product = width * height;\n  return product;\n}\nexport const unusedLocal = () => { const big = [1, 2, 3]; return big.length; };\n";
    let plain = compile(ts, &defaults());
    let small = compile(
        ts,
        &Options {
            minify: true,
            ..defaults()
        },
    );
    assert!(small.len() * 2 < plain.len(), "{small}");
    assert!(!small.contains('\n'), "{small}");
    assert_eq!(eval(&small, "[m.area(3, 4), m.unusedLocal()]"), "[12,3]");
}

#[test]
fn source_maps_point_into_the_original_files() {
    let (input, options) = json_request(
        r#"{"entry": "/main.ts", "sourcemap": "external", "files": {
            "/main.ts": "import { greet } from './greet';\n\n\nexport const message: string = greet('map');",
            "/greet.ts": "type Name = string;\n\nexport function greet(name: Name): string {\n  return 'hello ' + name;\n}"
        }}"#,
    );
    let out = crate::run(input, &options).unwrap();
    let map = swc_sourcemap::SourceMap::from_slice(out.map.unwrap().as_bytes()).unwrap();
    let position = |needle: &str| {
        let (line, text) = out
            .code
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains(needle))
            .unwrap();
        let token = map
            .lookup_token(line as u32, text.find(needle).unwrap() as u32)
            .unwrap();
        (
            token.get_source().unwrap().to_string(),
            token.get_src_line() + 1,
        )
    };
    assert_eq!(position("'hello '"), ("/greet.ts".to_string(), 4));
    assert_eq!(position("greet('map')"), ("/main.ts".to_string(), 4));
    assert_eq!(
        map.get_source_contents(0).map(|s| s.contains("type Name")),
        Some(true)
    );

    let inline = Options {
        sourcemap: SourceMaps::Inline,
        ..defaults()
    };
    let code = compile("export const a: number = 1;", &inline);
    assert!(
        code.contains("//# sourceMappingURL=data:application/json;charset=utf-8;base64,"),
        "{code}"
    );
}

#[test]
fn syntax_errors_are_placed_by_line_and_column() {
    let cases = [
        ("const x: number = ;", (1, 19)),
        ("let ok = 1;\nconst é = ('a' + ;", (2, 18)),
        ("export const A = () => <div>\n  <p>open\n", (3, 1)),
        (
            "export default function App() {\n  return <main>\n}\n",
            (3, 1),
        ),
    ];
    for (source, (line, column)) in cases {
        let d = crate::run(Input::Module(source.into()), &defaults())
            .err()
            .unwrap();
        assert_eq!((d[0].line, d[0].column), (line, column), "{source}: {d:?}");
        let mut distinct = d.clone();
        distinct.dedup();
        assert_eq!(distinct, d, "each problem is reported once");
        assert!(
            d[0].to_text()
                .starts_with(&format!("input.tsx:{line}:{column}: error: "))
        );
    }
}

/// The benchmark's "our swc natively": the component's own compile path on
/// the corpus that `bench/transpile.sh` writes to `$CORPUS` (one file per
/// line of `list.txt`: `<loader> <path>`), sequentially, one warm-up pass
/// first. Prints a JSON line like bench/transpile.mjs's.
#[test]
#[ignore = "a benchmark: bench/transpile.sh runs it in release"]
fn native_corpus_benchmark() {
    let dir =
        std::path::PathBuf::from(std::env::var("CORPUS").expect("CORPUS names the corpus folder"));
    let list = std::fs::read_to_string(dir.join("list.txt")).unwrap();
    let files: Vec<(crate::options::Loader, String)> = list
        .lines()
        .map(|line| {
            let (loader, path) = line.split_once(' ').unwrap();
            let loader = if loader == "tsx" {
                crate::options::Loader::Tsx
            } else {
                crate::options::Loader::Ts
            };
            (loader, std::fs::read_to_string(dir.join(path)).unwrap())
        })
        .collect();
    let pass = |times: &mut Vec<f64>| {
        for (loader, code) in &files {
            let options = Options {
                loader: *loader,
                ..defaults()
            };
            let t = std::time::Instant::now();
            crate::run(Input::Module(code.clone()), &options).expect("the corpus transpiles");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    };
    pass(&mut Vec::new());
    let mut times = Vec::new();
    let start = std::time::Instant::now();
    pass(&mut times);
    let seconds = start.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    println!(
        r#"{{"peer":"swc native (the component's code)","files":{},"files_per_s":{:.1},"p50_ms":{:.3},"p99_ms":{:.3}}}"#,
        files.len(),
        files.len() as f64 / seconds,
        at(50),
        at(99)
    );
}

#[test]
fn circular_imports_bundle() {
    let (input, options) = json_request(
        r#"{"entry": "/a.ts", "files": {
            "/a.ts": "import { b } from './b';\nexport const a = () => 'a' + b();\nexport const name = 'A';",
            "/b.ts": "import { name } from './a';\nexport const b = () => 'b' + name;"
        }}"#,
    );
    let code = crate::run(input, &options).unwrap().code;
    assert_eq!(eval(&code, "m.a()"), r#""abA""#);
}

#[test]
fn a_dynamic_import_of_a_bundled_file_is_a_diagnostic() {
    let (input, options) = json_request(
        r#"{"entry": "/a.ts", "files": {
            "/a.ts": "export const load = () => import('./b');\nexport const cdn = () => import('https://x.test/m.js');",
            "/b.ts": "export const b = 1;"
        }}"#,
    );
    let diagnostics = crate::run(input, &options).err().unwrap();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (1, 34));
    assert!(
        diagnostics[0].message.contains("import it statically"),
        "{diagnostics:?}"
    );
}

#[test]
fn long_constant_chains_are_compiled_as_written() {
    // The hostile probe's chain (its memory is the end-to-end test's,
    // `tests/e2e/transpile.rs`): the output holds it whole.
    let terms: Vec<String> = (0..3_000).map(|i| format!("x{i}")).collect();
    let source = format!("export const y = {};", terms.join("+"));
    let out = std::thread::Builder::new()
        .stack_size(256 << 20) // natively swc recurses on a test thread's 2 MiB
        .spawn(move || compile(&source, &defaults()))
        .unwrap()
        .join()
        .unwrap();
    assert!(
        out.contains("x0 + x1") && out.contains("x2998 + x2999"),
        "{}",
        &out[..80]
    );
    assert!(!out.contains(" as "), "the mark is stripped");
    // A shorter one is folded as before, and runs.
    let out = compile(
        "const big = 1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11 + 12 + 13 + 14 + 15 + 16;\nexport const y = big + 300 * 0 + 'x';",
        &defaults(),
    );
    assert_eq!(eval(&out, "m.y"), "\"136x\"");
    // An enum member that long is refused where it starts.
    let members: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let source = format!("enum E {{ A = {} }}", members.join(" + "));
    let diagnostics = match crate::run(Input::Module(source), &defaults()) {
        Err(d) => d,
        Ok(_) => panic!("an enum member of 300 operators was taken"),
    };
    assert_eq!(
        (diagnostics[0].line, diagnostics[0].column),
        (1, 14),
        "{diagnostics:?}"
    );
    assert!(diagnostics[0].message.contains("more than 256 operators"));
}
