//! The transpiler component (`components/transpile`, swc in wasm) on
//! spike.land's wire contract: TSX in, an ES module out, errors as
//! `<file>:<line>:<column>: error: <message>`, CORS, health.

use spike_e2e::*;

const TRANSPILE: Plugin = Plugin {
    name: "transpile",
    guest: "transpile",
    manifest: "[[routes]]\nprefix = \"/transpile\"\n\
               [env]\nJSX_IMPORT_SOURCE = \"@emotion/react\"\n\
               ALLOWED_ORIGINS = \"https://app.example\"\nMAX_SOURCE_KIB = \"64\"\n",
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
    let big = "x".repeat(65 << 10);
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

    let (status, health) = send_json(client().get(server.at("/transpile/health"))).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert!(
        health["version"].as_str().unwrap().starts_with("swc_core "),
        "{health}"
    );
}
