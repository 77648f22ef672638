//! The transpiler component (`components/transpile`, swc in wasm) on
//! spike.land's wire contract: TSX in, an ES module out, errors as
//! `<file>:<line>:<column>: error: <message>`, CORS, health; the JSON
//! mode, bundling, import maps, the KV cache and the limits. (What the
//! output of each TypeScript and JSX form does is tested natively, with
//! Node, in `components/transpile/src/tests.rs`.)

use spike_e2e::*;

const TRANSPILE: Plugin = Plugin {
    name: "transpile",
    guest: "transpile",
    manifest: "[[routes]]\nprefix = \"/transpile\"\n\
               [grants]\nkv = [\"transpile\"]\n\
               [env]\nJSX_IMPORT_SOURCE = \"@emotion/react\"\n\
               ALLOWED_ORIGINS = \"https://app.example\"\nMAX_SOURCE_KIB = \"5120\"\n\
               IMPORT_MAP = '{\"react\": \"{origin}/assets/react.mjs\"}'\n\
               CDN_URL = \"https://cdn.example/{pkg}?bundle\"\n\
               [limits]\nmax_body_mib = 6\ncpu_ms = 2000\ntimeout_ms = 5000\nmemory_mib = 512\n",
};

const APP: &str = r#"import type { FC } from "react";
import { useState } from "react";
enum Color { Red, Green = "g" }
const enum Size { Big = 2 }
namespace Names { export const first = "ann"; }
class Point { constructor(private readonly x: number, public y?: number) {} }
type Props = { name: string };
export const App: FC<Props> = ({ name }) => {
  const [n, setN] = useState<number>(0);
  const totals = { a: 1 } satisfies Record<string, number>;
  return <div css={{ color: "red" }} onClick={() => setN(n + 1)}>Hello {name} {Size.Big} {Color.Green} {Names.first}</div>;
};
export default new Point(1, 2);
"#;

async fn post(server: &TestServer, body: &str) -> reqwest::Response {
    let req = client()
        .post(server.at("/transpile"))
        .header("content-type", "text/plain")
        .body(body.to_string());
    within(req.send()).await.expect("the server answers")
}

/// Whether Node parses `code` as an ES module.
fn node_checks(code: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.mjs");
    std::fs::write(&file, code).unwrap();
    let out = std::process::Command::new("node")
        .arg("--check")
        .arg(&file)
        .output()
        .expect("node runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsx_becomes_an_es_module() {
    let server = TestServer::start(&[TRANSPILE]).await;
    let resp = post(&server, APP).await;
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/javascript; charset=utf-8")
    );
    assert_eq!(
        header("cache-control").as_deref(),
        Some("public, max-age=86400, immutable")
    );
    let code = within(resp.text()).await.unwrap();
    node_checks(&code).unwrap_or_else(|e| panic!("{e}\n{code}"));
    // The automatic runtime from the configured source; types gone; enums,
    // namespaces and parameter properties as JavaScript; const enums inlined.
    assert!(
        code.contains(r#"from "@emotion/react/jsx-runtime""#),
        "{code}"
    );
    for typescript in [
        "import type",
        "FC<",
        ": number",
        "satisfies",
        "type Props",
        "const enum",
    ] {
        assert!(!code.contains(typescript), "{typescript} left in:\n{code}");
    }
    assert!(code.contains(r#"Color["Green"] = "g""#), "{code}");
    assert!(code.contains("this.x = x"), "{code}");
    assert!(!code.contains("Size."), "a const enum is inlined:\n{code}");
    assert!(code.contains("export default new Point(1, 2)"), "{code}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_line_and_column_as_clients_parse_them() {
    let server = TestServer::start(&[TRANSPILE]).await;
    // The unclosed element is reported at the end of the input.
    for (source, line, column) in [
        ("const x = (1 + ;", 1, 16),
        ("let a = 1;\nlet b = ;\n", 2, 9),
        ("<div>\n  <span>\n</div>", 3, 7),
    ] {
        let resp = post(&server, source).await;
        assert_eq!(resp.status(), 400, "{source}");
        let text = within(resp.text()).await.unwrap();
        let (place, message) = text
            .split_once(": error: ")
            .unwrap_or_else(|| panic!("{text}"));
        let mut parts = place.rsplitn(3, ':');
        let (col, ln) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(
            (ln.parse::<usize>().unwrap(), col.parse::<usize>().unwrap()),
            (line, column),
            "{source}: {text}"
        );
        assert!(!message.trim().is_empty(), "{text}");
    }
    let resp = post(&server, "").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(within(resp.text()).await.unwrap(), "Empty code body");
    let big = "x".repeat((5 << 20) + 1);
    let (status, body) = send_json(client().post(server.at("/transpile")).body(big)).await;
    assert_eq!((status, error_code(&body)), (413, "too_large"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_and_health() {
    let server = TestServer::start(&[TRANSPILE]).await;
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, server.at("/transpile"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
    };
    let resp = within(preflight("https://app.example").send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let allow = resp
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(allow.as_deref(), Some("https://app.example"));
    assert!(resp.headers().get("access-control-allow-methods").is_some());
    let resp = within(preflight("https://elsewhere.example").send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // The router's own answers carry CORS too, so that a browser can read
    // why: a method a path does not take, and a path there is not.
    for (method, path, status) in [
        (reqwest::Method::GET, "/transpile", 405),
        (reqwest::Method::POST, "/transpile/nothing", 404),
    ] {
        let resp = client()
            .request(method, server.at(path))
            .header("origin", "https://app.example");
        let resp = within(resp.send()).await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://app.example"
        );
    }

    let (status, health) = send_json(client().get(server.at("/transpile/health"))).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert!(
        health["version"].as_str().unwrap().starts_with("swc_core "),
        "{health}"
    );
}

async fn post_json(server: &TestServer, body: serde_json::Value) -> (u16, serde_json::Value) {
    let req = client()
        .post(server.at("/transpile"))
        .header("cache-control", "no-store")
        .json(&body);
    send_json(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_answers_code_maps_and_diagnostics() {
    let server = TestServer::start(&[TRANSPILE]).await;
    let (status, body) = post_json(
        &server,
        serde_json::json!({"code": "export const a: number = 1;", "sourcemap": "external", "loader": "ts"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], "export const a = 1;\n");
    assert_eq!(body["diagnostics"], serde_json::json!([]));
    let map: serde_json::Value = serde_json::from_str(body["map"].as_str().unwrap()).unwrap();
    assert_eq!(map["sources"], serde_json::json!(["input.ts"]));

    // Several files: one module, relative imports bundled, bare ones kept.
    let (status, body) = post_json(
        &server,
        serde_json::json!({
            "entry": "/App.tsx",
            "minify": true,
            "files": {
                "/App.tsx": "import { twice } from './twice';\nexport const App = () => <b>{twice(2)}</b>;",
                "/twice.ts": "export const twice = (n: number): number => n * 2;"
            }
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let code = body["code"].as_str().unwrap();
    assert!(!code.contains("./twice") && !code.contains('\n'), "{code}");
    assert!(code.contains("@emotion/react/jsx-runtime"), "{code}");
    node_checks(code).unwrap_or_else(|e| panic!("{e}\n{code}"));

    // Problems: a 400 with every diagnostic in place.
    let (status, body) = post_json(
        &server,
        serde_json::json!({"entry": "/a.ts", "files": {"/a.ts": "import './gone';\nexport const a = ;"}}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "transpile_error"),
        "{body}"
    );
    let diagnostics = body["diagnostics"].as_array().unwrap();
    let first = &diagnostics[0];
    assert_eq!(
        (
            first["file"].as_str(),
            first["line"].as_u64(),
            first["column"].as_u64()
        ),
        (Some("/a.ts"), Some(2), Some(18)),
        "{body}"
    );
    assert_eq!(first["severity"], "error");

    for (bad, why) in [
        (
            serde_json::json!({"code": "1", "target": "es1999"}),
            "target",
        ),
        (
            serde_json::json!({"code": "1", "loader": "coffee"}),
            "coffee",
        ),
        (serde_json::json!({"code": "1", "files": {}}), "not both"),
        (serde_json::json!({"files": {"/a.ts": "1"}}), "entry"),
        (serde_json::json!({"code": "1", "colour": "red"}), "colour"),
    ] {
        let (status, body) = post_json(&server, bad).await;
        assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esm_route_rewrites_bare_imports_through_the_import_map() {
    let server = TestServer::start(&[TRANSPILE]).await;
    let source = "import { useState } from 'react';\nimport confetti from 'canvas-confetti';\n\
                  import { local } from './local.js';\nexport * from '@scope/pkg/sub';\n\
                  export const lazy = () => import('lodash-es');\n\
                  export const App = () => { const [n] = useState(0); confetti(); return <p>{local(n)}</p>; };";
    let req = client()
        .post(server.at("/transpile/esm"))
        .header("tr_origin", "https://spike.example")
        .body(source);
    let resp = within(req.send()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let code = within(resp.text()).await.unwrap();
    for expected in [
        r#"from "https://spike.example/assets/react.mjs""#,
        r#"from "https://cdn.example/canvas-confetti?bundle""#,
        r#"from "https://cdn.example/@scope/pkg/sub?bundle""#,
        r#"import("https://cdn.example/lodash-es?bundle")"#,
        r#"from "https://cdn.example/@emotion/react/jsx-runtime?bundle""#,
        "from './local.js'",
    ] {
        assert!(code.contains(expected), "{expected} missing in\n{code}");
    }
    // The JSON form asks for the same map with `"importMap": true`.
    let req = client()
        .post(server.at("/transpile"))
        .header("tr_origin", "https://spike.example")
        .json(&serde_json::json!({"code": "export { version } from 'react';", "importMap": true}));
    let (status, body) = send_json(req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["code"],
        "export { version } from \"https://spike.example/assets/react.mjs\";\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_come_from_the_cache_the_second_time() {
    let server = TestServer::start(&[TRANSPILE]).await;
    let ask = |origin: &'static str, cache_control: Option<&'static str>| {
        let mut req = client()
            .post(server.at("/transpile"))
            .header("tr_origin", origin)
            .body(APP);
        if let Some(value) = cache_control {
            req = req.header("cache-control", value);
        }
        async move {
            let resp = within(req.send()).await.unwrap();
            assert_eq!(resp.status(), 200);
            let state = resp.headers()["x-cache"].to_str().unwrap().to_string();
            (state, within(resp.text()).await.unwrap())
        }
    };
    let (first, code) = ask("https://a.example", None).await;
    assert_eq!(first, "miss");
    let (second, cached) = ask("https://a.example", None).await;
    assert_eq!((second.as_str(), cached.as_str()), ("hit", code.as_str()));
    // Another origin is another key; `no-cache` compiles again.
    assert_eq!(ask("https://b.example", None).await.0, "miss");
    assert_eq!(ask("https://a.example", Some("no-cache")).await.0, "miss");
    // A JSON request for the same source is cached apart from the text one.
    let req = client()
        .post(server.at("/transpile"))
        .json(&serde_json::json!({"code": APP}));
    let resp = within(req.send()).await.unwrap();
    assert_eq!(resp.headers()["x-cache"], "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_sources_end_in_4xx_or_504_and_the_server_goes_on() {
    let server = TestServer::start(&[TRANSPILE]).await;
    let nested =
        |open: &str, close: &str, n: usize| format!("x = {}1{};", open.repeat(n), close.repeat(n));
    // Up to the limit the stack holds: 1,000 brackets, elements or arrows,
    // 4,000 operators in a row.
    for (what, source) in [
        ("brackets", nested("(", ")", 999)),
        ("arrays", nested("[", "]", 999)),
        ("elements", nested("<div>", "</div>", 999)),
        ("arrows", format!("x = {}1;", "() => ".repeat(999))),
        ("operators", format!("x = 1{};", " + 1".repeat(3_990))),
        ("members", format!("x = a{};", ".b".repeat(3_990))),
        ("nested ifs", format!("{}x();", "if (a) ".repeat(990))),
        ("nested loops", format!("{}x();", "for (;;) ".repeat(990))),
        (
            "an else-if chain",
            format!("if (a) {{}}{}", " else if (a) {}".repeat(990)),
        ),
        (
            "labels",
            format!(
                "{}x();",
                (0..3_990).map(|i| format!("l{i}: ")).collect::<String>()
            ),
        ),
        ("ternaries", format!("x = {}1;", "a ? b : ".repeat(1_990))),
    ] {
        let resp = post(&server, &source).await;
        assert_eq!(resp.status(), 200, "{what} within the limit");
    }
    // The hostile probe's constant of 3,000 terms, minified: its folding
    // took the component past 512 MiB (a 500).
    let terms: Vec<String> = (0..3_000).map(|i| format!("x{i}")).collect();
    let (status, body) = post_json(
        &server,
        serde_json::json!({"code": format!("export const x = {};", terms.join("+")), "loader": "ts", "minify": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["code"].as_str().unwrap().contains("x2999"));
    // Past it: a 400 that says where.
    for (what, source) in [
        ("10,000 brackets", nested("(", ")", 10_000)),
        ("10,000 elements", nested("<div>", "</div>", 10_000)),
        ("a 5 MB chain", format!("x = 1{};", "+1".repeat(2_500_000))),
        // The hostile probe's: brackets behind a division read as a
        // regular expression, nested statements, a long else-if chain.
        (
            "a division of 6,000 brackets",
            format!(
                "export const x = {{}} / {}1{} / 1;",
                "(".repeat(6_000),
                ")".repeat(6_000)
            ),
        ),
        (
            "10,000 nested ifs",
            format!("{}x();", "if (a) ".repeat(10_000)),
        ),
        (
            "10,000 nested loops",
            format!("{}x();", "for (;;) ".repeat(10_000)),
        ),
        (
            "50,000 else-ifs",
            format!("if (a) {{}}{}", " else if (a) {}".repeat(50_000)),
        ),
    ] {
        let resp = post(&server, &source).await;
        assert_eq!(resp.status(), 400, "{what}");
        let text = within(resp.text()).await.unwrap();
        assert!(
            text.starts_with("input.tsx:1:") && text.contains("nests too deeply"),
            "{what}: {text}"
        );
    }
    // A 5 MB line of ordinary code is more than the CPU limit (2 s here).
    let line: String = (0..70_000)
        .map(|i| format!("const a{i} = {{ k: [{i}, 'v{i}'], f: (x: number) => x * {i} }};"))
        .collect::<String>();
    let (status, body) = send_json(
        client()
            .post(server.at("/transpile"))
            .header("cache-control", "no-store")
            .body(line),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (504, "plugin_cpu_limit"),
        "{body}"
    );
    // And the next request is served as ever.
    let resp = post(&server, "export const fine: boolean = true;").await;
    assert_eq!(resp.status(), 200);
}
