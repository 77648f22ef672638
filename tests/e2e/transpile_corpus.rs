//! The transpiler against real TypeScript: the `.ts` / `.tsx` sources that
//! npm packages ship (`tests/node/package.json`; TanStack Query, Router and
//! Store, tRPC's server) through spike's `POST /transpile`, each answer
//! parsed by Node as an ES module; and a sample of packages bundled by
//! spike and by esbuild (npm), whose exports and behaviour must match.
//! The work is `tests/node/transpile-corpus.mjs`'s; this starts the server
//! and reads its verdict.

use std::time::Duration;

use spike_e2e::*;

const TRANSPILE: Plugin = Plugin {
    name: "transpile",
    guest: "transpile",
    manifest: "[[routes]]\nprefix = \"/transpile\"\n[limits]\nmax_body_mib = 6\nmemory_mib = 512\n",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_packages_transpile_parse_and_bundle_like_esbuild() {
    let server = TestServer::start(&[TRANSPILE]).await;
    let script = node::node_dir().join("transpile-corpus.mjs");
    let run = tokio::process::Command::new("node")
        .arg("--experimental-vm-modules")
        .arg(&script)
        .arg(server.at(""))
        .kill_on_drop(true)
        .output();
    let out = within_for(Duration::from_secs(300), run)
        .await
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

    assert!(report["files"].as_u64().unwrap() >= 250, "{report}");
    assert_eq!(report["failures"], serde_json::json!([]), "{report:#}");
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3, "{report:#}");
    for sample in samples {
        assert!(sample["error"].is_null(), "{sample:#}");
        assert_eq!(sample["same_exports"], true, "{sample:#}");
        assert!(sample["exports"].as_u64().unwrap() > 5, "{sample:#}");
        assert!(
            !sample["spike"].as_str().unwrap().starts_with("threw"),
            "{sample:#}"
        );
        assert_eq!(sample["spike"], sample["esbuild"], "{sample:#}");
    }
}
