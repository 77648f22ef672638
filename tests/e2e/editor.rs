//! The editor at `/` (`site/`) in Debian's Chromium, driven by
//! playwright-core (`tests/node/editor.mjs`), against a server running the
//! shipped manifests of `plugins/` (auth, dev tokens, CMS, transpiler, Yjs
//! rooms, renderer, npm in front of a Verdaccio registry of real packages)
//! and the AI routes in front of the fake provider: two users editing one
//! document, the preview (importing React, zustand and date-fns from
//! /npm/ with one React, and naming a package it cannot import), a syntax
//! error, save and
//! reload, the screenshot button, the explain panel, the offline shell
//! (with the document's text), a new version and the kill switch. Screenshots of each step are kept in
//! `$CARGO_TARGET_TMPDIR/editor-artifacts/` for a person to look at.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use spike::caps::secrets::SecretSource;
use spike_e2e::ai_server;
use spike_e2e::fake_ai::{ANTHROPIC_KEY, FakeAi, OPENAI_KEY};
use spike_e2e::npm_registry::{Verdaccio, npm_manifest, use_registry};
use spike_e2e::*;

/// The shipped plugins the editor uses, by manifest name and guest.
const SHIPPED: [(&str, &str); 6] = [
    ("auth", "auth"),
    ("dev-tokens", "auth"),
    ("cms", "cms"),
    ("transpile", "transpile"),
    ("yjs", ""),
    ("render", "render"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A shipped manifest without its `component` line (the harness writes
/// its own, next to the guest it copies).
fn shipped_manifest(name: &str) -> String {
    let path = repo().join("plugins").join(format!("{name}.toml"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim_start().starts_with("component"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A copy of the built site, which the test may change (a new version,
/// the kill switch) while the server watches it.
fn site_copy(into: &Path) -> PathBuf {
    let built = repo().join("site/dist");
    assert!(
        built.join("vendor/importmap.json").exists(),
        "{} is not built: run scripts/build-site.sh (./dev.sh test does)",
        built.display()
    );
    let site = into.join("site");
    copy_dir(&built, &site);
    site
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A server with the editor's plugins and `site`; the AI routes have the
/// fake provider's keys only if `ai_keys`; packages come from `registry`.
async fn start(fake: &FakeAi, registry: &Verdaccio, site: &Path, ai_keys: bool) -> TestServer {
    let manifests: Vec<(String, &str, String)> = SHIPPED
        .iter()
        .map(|(name, guest)| (name.to_string(), *guest, shipped_manifest(name)))
        .chain([
            (
                "ai".to_string(),
                "ai",
                ai_server::manifest(fake, &ai_server::providers(fake, ""), ""),
            ),
            ("npm".to_string(), "npm", npm_manifest("")),
        ])
        .collect();
    let plugins: Vec<Plugin<'_>> = manifests
        .iter()
        .map(|(name, guest, manifest)| Plugin {
            name,
            guest,
            manifest,
        })
        .collect();
    let site = site.to_path_buf();
    let registry = registry.url();
    let mut env = vec![(
        "SPIKE_SECRET_JWT_HS256_KEY".into(),
        "editor-test-key".into(),
    )];
    if ai_keys {
        env.push(("SPIKE_SECRET_OPENAI_API_KEY".into(), OPENAI_KEY.into()));
        env.push((
            "SPIKE_SECRET_ANTHROPIC_API_KEY".into(),
            ANTHROPIC_KEY.into(),
        ));
    }
    TestServer::start_with(&plugins, move |config| {
        config.sites = vec![spike::assets::SiteConfig {
            host: None,
            prefix: "/".into(),
            dir: site,
        }];
        config.watch = true;
        config.secrets = SecretSource { file: None, env };
        use_registry(config, &registry);
        // No --render-allow: the screenshot button's page loads this
        // server's own modules, which the renderer may reach as any
        // client may.
    })
    .await
}

/// Runs `editor.mjs` in `mode`; its checks by name. (On a failure, the
/// screenshots of each page are in the artifacts folder.)
async fn run_browser(server: &TestServer, site: &Path, mode: &str) -> HashMap<String, Value> {
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("editor-artifacts");
    eprintln!("screenshots in {}", artifacts.display());
    let args = [
        server.url.as_ref(),
        site.as_os_str(),
        artifacts.as_os_str(),
        mode.as_ref(),
    ];
    node::run_to_end("editor.mjs", &args, Duration::from_secs(600))
        .await
        .into_iter()
        .filter_map(|v| Some((v["check"].as_str()?.to_string(), v)))
        .collect()
}

/// A server (the fake provider's keys given to the AI routes only if
/// `ai_keys`) on a copy of the site, and `editor.mjs` in `mode` against it.
async fn browse(ai_keys: bool, mode: &str) -> HashMap<String, Value> {
    let fake = FakeAi::start().await;
    let registry = Verdaccio::start().await;
    let dir = tempfile::tempdir().unwrap();
    let site = site_copy(dir.path());
    let server = start(&fake, &registry, &site, ai_keys).await;
    run_browser(&server, &site, mode).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_edit_preview_save_render_and_ask_in_a_real_browser() {
    let checks = browse(true, "full").await;
    for name in [
        "both see the document",
        "presence",
        "text and cursors reach the other editor",
        "the preview follows typing",
        "a syntax error shows its line and column",
        "packages from npm share one React",
        "a package that cannot be imported is named",
        "save, reload: the document is back",
        "a revert is the document's: seen, announced and undoable",
        "the screenshot button",
        "the explain panel streams",
        "offline reload shows the shell",
        "a new version is picked up on reload",
        "the kill switch removes the worker",
    ] {
        assert_eq!(checks[name]["ok"], true, "{name}: {:?}", checks.get(name));
    }
    let preview = &checks["the preview follows typing"];
    eprintln!("the preview followed typing in {} ms", preview["ms"]);
    // Measured from the keystroke to the new heading in the preview; the
    // issue asks for a second, with room here for a loaded 2-core machine.
    assert!(preview["ms"].as_u64().unwrap() < 3000, "{preview}");
    let error = &checks["a syntax error shows its line and column"];
    assert_eq!((&error["line"], &error["column"]), (&3.into(), &1.into()));
    assert!(
        checks["the screenshot button"]["bytes"].as_u64().unwrap() > 1000,
        "{checks:?}"
    );
    // The fake provider echoes the last message: the code itself.
    let explained = &checks["the explain panel streams"];
    let text = explained["text"].as_str().unwrap();
    assert!(text.starts_with("echo: import"), "{explained}");
    // The fake streams a word an event; the panel showed them one by one.
    assert!(explained["pieces"].as_u64().unwrap() > 10, "{explained}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explain_panel_says_when_no_provider_is_configured() {
    let checks = browse(false, "unconfigured-ai").await;
    let said = checks["explain says no provider is configured"]["text"]
        .as_str()
        .unwrap();
    assert!(said.contains("SPIKE_SECRET_OPENAI_API_KEY"), "{said}");
}
