//! `spike check`: a plugin author's look at a component before deploying it.

use spike_e2e::*;

#[tokio::test]
async fn reports_a_fitting_component() {
    let report = within(spike::runtime::check::check_component(&guest("hello")))
        .await
        .expect("hello fits the plugin world");
    assert!(
        report
            .imports
            .iter()
            .any(|i| i.starts_with("spike:host/kv")),
        "{:?}",
        report.imports
    );
    assert!(
        report
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:http/types")),
        "{:?}",
        report.imports
    );
    assert!(report.compile_ms > 0.0 && report.cached_load_ms > 0.0);
    // Loading from the cache skips Cranelift entirely.
    assert!(report.cached_load_ms < report.compile_ms, "{report:?}");
    assert!(
        report.instantiate_us_median > 0.0
            && report.instantiate_us_p99 >= report.instantiate_us_median
    );
}

#[tokio::test]
async fn names_what_a_component_exports() {
    let hello = within(spike::runtime::check::check_component(&guest("hello")))
        .await
        .unwrap();
    assert_eq!(hello.exports, ["wasi:http/incoming-handler@0.2.12"]);
    let auth = within(spike::runtime::check::check_component(&guest("auth")))
        .await
        .expect("the auth plugin fits");
    assert!(
        auth.exports
            .iter()
            .any(|e| e == "spike:host/authenticator@0.1.0"),
        "{:?}",
        auth.exports
    );
    let chat = within(spike::runtime::check::check_component(&guest("chat")))
        .await
        .expect("a room handler fits");
    assert_eq!(chat.exports, ["spike:host/room-handler@0.1.0"]);
    assert!(
        chat.imports.iter().any(|i| i == "spike:host/rooms@0.1.0"),
        "{:?}",
        chat.imports
    );
}

#[tokio::test]
async fn refuses_with_the_reason() {
    let err = within(spike::runtime::check::check_component(&guest(
        "fixture_not_a_plugin",
    )))
    .await
    .expect_err("a command component is not a plugin")
    .to_string();
    assert!(
        err.contains("does not fit the spike:host/plugin world"),
        "{err}"
    );
    assert!(err.contains("incoming-handler"), "{err}");
}

/// Given a manifest, the WASI standards its component imports and what the
/// manifest grants each; a version spike does not link, named.
#[tokio::test]
async fn lists_the_standards_a_component_imports_and_their_grants() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("standards.toml");
    let component = guest("fixture_standards");
    std::fs::write(
        &manifest,
        format!(
            "component = {:?}\n[[routes]]\nprefix = \"/std\"\n[grants]\nkv = [\"probe\"]\n\
             [config]\ngreeting = \"hello\"\n",
            component.display().to_string()
        ),
    )
    .unwrap();
    let report = within(spike::runtime::check::check_component(&manifest))
        .await
        .expect("the standards fixture fits");
    let granted = |import: &str| {
        let found = report.standards.iter().find(|s| s.import == import);
        let found = found.unwrap_or_else(|| panic!("no {import} in {:?}", report.standards));
        found.granted.clone()
    };
    for kv in ["store", "atomics", "batch"] {
        for version in ["0.2.0-draft", "0.2.0-draft2"] {
            let import = format!("wasi:keyvalue/{kv}@{version}");
            assert_eq!(granted(&import), Some(vec!["probe".to_string()]));
        }
    }
    assert_eq!(
        granted("wasi:config/store@0.2.0-rc.1"),
        Some(vec!["greeting".to_string()])
    );
    // No bucket granted: every blobstore call that needs one fails.
    assert_eq!(
        granted("wasi:blobstore/container@0.2.0-draft"),
        Some(vec![])
    );
    assert_eq!(granted("wasi:logging/logging@0.1.0-draft"), None);
    // wasi:http and wasi:cli are WASI itself, not listed.
    assert!(
        report
            .standards
            .iter()
            .all(|s| !s.import.starts_with("wasi:http"))
    );

    let unlinked = guest("fixture_unlinked_standard");
    let checked = spike::runtime::check::check_component(&unlinked);
    let error = within(checked).await.unwrap_err().to_string();
    assert!(
        error.contains("wasi:keyvalue/store@0.2.0-draft3")
            && error.contains("spike links wasi:keyvalue at 0.2.0-draft, 0.2.0-draft2"),
        "{error}"
    );
}
