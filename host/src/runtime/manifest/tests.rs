//! Manifest parsing: what is accepted, and each refusal with its line.

use super::*;
use crate::caps::Kind;

fn parse_str(text: &str) -> Result<Manifest, ManifestError> {
    parse(Path::new("/p/hello.toml"), text)
}

#[test]
fn full_manifest() {
    let m = parse_str(
        r#"
component = "hello.wasm"
[[routes]]
prefix = "/hello"
methods = ["get", "POST"]
[[routes]]
prefix = "/api/hello"
[grants]
kv = ["hello"]
blob = ["files"]
outbound = ["api.example.com", "127.0.0.1:9000"]
services = ["transpiler", "cms"]
identity_to = ["cms"]
[limits]
memory_mib = 64
cpu_ms = 100
timeout_ms = 2000
max_duration_ms = 5000
max_body_mib = 1024
max_concurrent = 7
"#,
    )
    .unwrap();
    assert_eq!(m.name, "hello");
    assert_eq!(m.component.as_deref(), Some(Path::new("/p/hello.wasm")));
    assert_eq!(
        m.routes[0].methods,
        ["GET", "POST"].map(String::from).into()
    );
    assert!(m.routes[1].methods.is_empty());
    assert!(m.grants.check(Kind::Kv, "hello").is_ok());
    assert!(m.grants.check_outbound("127.0.0.1", 9000).is_ok());
    assert!(m.grants.check(Kind::Service, "transpiler").is_ok());
    assert!(m.grants.check(Kind::Service, "hello").is_err());
    assert_eq!(m.grants.identity_to, ["cms".to_string()].into());
    assert_eq!(m.limits.memory_bytes, 64 << 20);
    assert_eq!(m.limits.cpu, Duration::from_millis(100));
    assert_eq!(m.limits.max_body_bytes, 1024 << 20);
    assert_eq!(m.limits.max_duration, Duration::from_millis(5000));
    assert_eq!(m.limits.max_concurrent, Some(7));
}

#[test]
fn auth_rate_limits_quotas_and_env() {
    let m = parse_str(
        r#"
component = "x.wasm"
[[routes]]
prefix = "/a"
auth = "required"
rate_limit = { requests = 5, per_s = 60, key = "user" }
[[routes]]
prefix = "/b"
auth = "optional"
authenticator = "clerk"
rate_limit = false
[[routes]]
prefix = "/c"
rate_limit = { requests = 100, per_s = 60 }
[[routes]]
prefix = "/d"
[quotas.ai-calls]
requests = 1000
per_s = 3600
[env]
ISSUER = "https://issuer.example"
_X1 = ""
"#,
    )
    .unwrap();
    let r = &m.routes;
    assert_eq!(
        r[0].auth,
        Some(RouteAuth::Caller {
            required: true,
            authenticator: "auth".into()
        })
    );
    assert_eq!(
        r[0].rate_limit,
        RouteLimit::Rule {
            rule: Rule::new(5, 60).unwrap(),
            key: LimitKey::User
        }
    );
    assert_eq!(
        r[1].auth,
        Some(RouteAuth::Caller {
            required: false,
            authenticator: "clerk".into()
        })
    );
    assert_eq!(r[1].rate_limit, RouteLimit::Off);
    assert!(matches!(
        r[2].rate_limit,
        RouteLimit::Rule {
            key: LimitKey::Ip,
            ..
        }
    ));
    assert_eq!((&r[3].auth, r[3].rate_limit), (&None, RouteLimit::Default));
    assert_eq!(m.grants.quotas["ai-calls"], Rule::new(1000, 3600).unwrap());
    assert_eq!(
        m.env,
        [
            ("ISSUER".to_string(), "https://issuer.example".to_string()),
            ("_X1".to_string(), String::new())
        ]
    );
}

#[test]
fn max_duration_is_never_shorter_than_the_time_to_headers() {
    let m = parse_str(
        "component = \"x.wasm\"\nroutes = [{ prefix = \"/x\" }]\nlimits.timeout_ms = 600000\n",
    )
    .unwrap();
    assert_eq!(m.limits.max_duration, Duration::from_millis(600_000));
}

#[test]
fn defaults_deny_everything() {
    let m = parse_str("component = \"x.wasm\"\nroutes = [{ prefix = \"/x\" }]\n").unwrap();
    assert!(m.grants.names(Kind::Kv).next().is_none());
    assert!(m.grants.names(Kind::Blob).next().is_none());
    assert!(m.grants.names(Kind::Sql).next().is_none());
    assert!(m.grants.outbound.is_empty());
    assert_eq!(m.limits, Limits::default());
}

#[test]
fn sql_databases_are_granted_by_a_name_that_can_name_a_file() {
    let base = "component = \"x.wasm\"\nroutes = [{ prefix = \"/x\" }]\n";
    let m = parse_str(&format!("{base}[grants]\nsql = [\"notes\", \"a.b-c_1\"]\n")).unwrap();
    assert!(m.grants.check(Kind::Sql, "notes").is_ok());
    assert!(m.grants.check(Kind::Sql, "a.b-c_1").is_ok());
    assert!(m.grants.check(Kind::Sql, "other").is_err());
    for bad in ["../x", ".hidden", "", "a/b", "x y"] {
        let e = parse_str(&format!("{base}[grants]\nsql = [\"{bad}\"]\n")).unwrap_err();
        assert!(e.message.contains("sql database"), "{bad}: {e}");
        assert!(e.line.is_some(), "{bad}: {e}");
    }
}

#[test]
fn errors_name_file_and_line() {
    let e = parse_str("component = \"x.wasm\"\n[[routes]]\nprefix = \"nope\"\n").unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(e.to_string().starts_with("/p/hello.toml:3: "), "{e}");
    assert!(e.message.contains("must start with '/'"), "{e}");

    let e = parse_str(
        "component = \"x.wasm\"\nroutes = [{ prefix = \"/x\" }]\n[limits]\nmemroy_mib = 3\n",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("memroy_mib"), "{e}");

    let e = parse_str("component = \"x.wasm\"\nroutes = [{ prefix = \"/x\" }\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");

    let e = parse_str("routes = [{ prefix = \"/x\" }]\n").unwrap_err();
    assert!(e.message.contains("component"), "{e}");

    let e = parse_str("component = \"x.wasm\"\n").unwrap_err();
    assert!(e.message.contains("routes"), "{e}");
}

#[test]
fn refuses_bad_routes_and_grants() {
    refused_at_their_line(&[
        ("routes = [{ prefix = \"/_spike/x\" }]", "overlaps"),
        ("routes = [{ prefix = \"/healthz\" }]", "overlaps"),
        ("routes = [{ prefix = \"/x/\" }]", "must not end"),
        (
            "routes = [{ prefix = \"/x\", methods = [\"GE T\"] }]",
            "not an HTTP method",
        ),
        (
            "routes = [{ prefix = \"/x\", methods = [] }]",
            "methods is empty",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\ngrants.kv = [\"a b\"]",
            "kv namespace",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\ngrants.outbound = [\"http://x\"]",
            "not a URL",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\ngrants.services = [\"Bad\"]",
            "service: ",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\n[grants]\nservices = [\"a\"]\nidentity_to = [\"b\"]",
            "'b' is not one of this plugin's services",
        ),
    ]);
}

#[test]
fn refuses_bad_limits_quotas_and_env() {
    refused_at_their_line(&[
        (
            "routes = [{ prefix = \"/x\" }]\nlimits.memory_mib = 0",
            "memory_mib",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\nname = \"Bad\"",
            "plugin name",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\nlimits.timeout_ms = 6000\nlimits.max_duration_ms = 5000",
            "shorter than timeout_ms",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\nlimits.max_concurrent = 0",
            "max_concurrent",
        ),
        (
            "routes = [{ prefix = \"/x\", auth = \"maybe\" }]",
            "auth = \"maybe\"",
        ),
        (
            "routes = [{ prefix = \"/x\", authenticator = \"auth\" }]",
            "auth does not name a caller",
        ),
        (
            "routes = [{ prefix = \"/x\", auth = \"operator\", authenticator = \"auth\" }]",
            "auth does not name a caller",
        ),
        (
            "routes = [{ prefix = \"/x\", auth = \"admin\" }]",
            "write \"required\", \"optional\" or \"operator\"",
        ),
        (
            "routes = [{ prefix = \"/x\", auth = \"required\", authenticator = \"A\" }]",
            "plugin name",
        ),
        (
            "routes = [{ prefix = \"/x\", rate_limit = { requests = 5, per_s = 60, key = \"user\" } }]",
            "needs a caller",
        ),
        (
            "routes = [{ prefix = \"/x\", rate_limit = { requests = 0, per_s = 60 } }]",
            "requests must be at least 1",
        ),
        (
            "routes = [{ prefix = \"/x\", rate_limit = { requests = 5 } }]",
            "needs per_s",
        ),
        (
            "routes = [{ prefix = \"/x\", rate_limit = { requests = 5, per_s = 1, key = \"host\" } }]",
            "rate_limit.key",
        ),
        (
            "routes = [{ prefix = \"/x\", rate_limit = { requests = 5, per_s = 1, burst = 2 } }]",
            "unknown field 'burst'",
        ),
        (
            "routes = [{ prefix = \"/x\", rate_limit = true }]",
            "must be false or",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\nquotas.q = { requests = 1, per_s = 0 }",
            "per_s must be at least 1",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\nquotas.q = { requests = 1 }",
            "per_s",
        ),
        (
            "routes = [{ prefix = \"/x\" }]\nenv.\"A-B\" = \"x\"",
            "env: 'A-B'",
        ),
        ("routes = [{ prefix = \"/x\" }]\nenv.A = 1", "string"),
        ("routes = [{ prefix = \"/x\" }]\nconfig.a = 1", "string"),
        (
            "routes = [{ prefix = \"/x\" }]\nconfig.\"\" = \"x\"",
            "config: a key must be 1 to 256 bytes",
        ),
    ]);
    let long = format!(
        "routes = [{{ prefix = \"/x\" }}]\nconfig.k = \"{}\"",
        "v".repeat(65537)
    );
    refused_at_their_line(&[(long.as_str(), "the limit is 65536")]);
}

/// `[config]`: strings by key, sorted, for `wasi:config/store`.
#[test]
fn config_is_a_table_of_strings() {
    let m = parse_str(
        "component = \"x.wasm\"\n[[routes]]\nprefix = \"/x\"\n\
         [config]\nzeta = \"last\"\n\"db.url\" = \"postgres://x\"\nalpha = \"\"\n",
    )
    .unwrap();
    let keys: Vec<&str> = m.config.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["alpha", "db.url", "zeta"]);
    assert_eq!(m.config[1].1, "postgres://x");
    let none = parse_str("component = \"x.wasm\"\n[[routes]]\nprefix = \"/x\"\n").unwrap();
    assert!(none.config.is_empty());
}

/// Each manifest (after a component line) is refused with a message that
/// holds its needle, at a line.
fn refused_at_their_line(cases: &[(&str, &str)]) {
    for (text, needle) in cases {
        let e = parse_str(&format!("component = \"x.wasm\"\n{text}\n")).unwrap_err();
        assert!(e.message.contains(needle), "{text}: {e}");
        assert!(e.line.is_some(), "{text}: {e}");
    }
}

#[test]
fn rooms_with_and_without_a_component() {
    let m = parse_str(
        "[[rooms]]\nprefix = \"/room\"\nprotocol = \"text\"\nauth = \"optional\"\nmax_message_kib = 8\nidle_s = 5\n",
    )
    .unwrap();
    assert_eq!(m.component, None);
    assert!(m.routes.is_empty());
    let room = &m.rooms[0];
    assert_eq!(
        (room.prefix.as_str(), room.protocol),
        ("/room", RoomProtocol::Text)
    );
    assert!(matches!(
        room.auth,
        Some(RouteAuth::Caller {
            required: false,
            ..
        })
    ));
    assert_eq!(room.limits.max_message_bytes, 8 << 10);
    assert_eq!(room.limits.idle, std::time::Duration::from_secs(5));
    assert_eq!(room.limits.send_queue, RoomLimits::default().send_queue);

    let m = parse_str("rooms = [{ prefix = \"/sync\", protocol = \"livestore\" }]\n").unwrap();
    let room = &m.rooms[0];
    assert_eq!(room.protocol, RoomProtocol::LiveStore);
    assert!(!room.protocol.host_frames() && !room.protocol.binary());
    // A push of 100 events, and pushes as fast as their acknowledgements.
    assert_eq!(room.limits.max_message_bytes, 1 << 20);
    assert_eq!(room.limits.messages_per_s, 1000);

    let m = parse_str("component = \"h.wasm\"\nrooms = [{ prefix = \"/chat\" }]\n").unwrap();
    assert_eq!(m.rooms[0].protocol, RoomProtocol::Relay);
    assert!(m.component.is_some());

    for (text, needle) in [
        ("rooms = [{ prefix = \"/\" }]", "cannot be '/'"),
        (
            "rooms = [{ prefix = \"/r\", protocol = \"automerge\" }]",
            "write one of \"relay\", \"text\", \"yjs\", \"livestore\"",
        ),
        (
            "rooms = [{ prefix = \"/r\", send_queue = 1 }]",
            "send_queue must be between",
        ),
        (
            "rooms = [{ prefix = \"/r\", max_message_kib = 0 }]",
            "max_message_kib",
        ),
        (
            "rooms = [{ prefix = \"/r\", authenticator = \"auth\" }]",
            "auth does not name a caller",
        ),
        ("rooms = [{ prefix = \"/r\", speed = 3 }]", "speed"),
        (
            "rooms = [{ prefix = \"/r\", protocol = \"livestore\", compact_every = 100 }]",
            "a livestore room: it keeps every event",
        ),
    ] {
        let e = parse_str(&format!("{text}\n")).unwrap_err();
        assert!(e.message.contains(needle), "{text}: {e}");
        assert!(e.line.is_some(), "{text}: {e}");
    }
}
