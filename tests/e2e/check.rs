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
