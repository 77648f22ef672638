//! `spike certs list`: the certificates a running server serves over
//! HTTPS, through its admin API (`/_spike/certs`): names, where each came
//! from, when it expires and is renewed, and ACME's failures.

use http::Method;
use serde_json::Value;

use super::{CommandError, Target, table};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertsCommand {
    /// Each certificate served: names, source (file or acme), expiry, the
    /// next renewal, and ACME's last error.
    List,
}

pub async fn run(
    target: &Target,
    command: &CertsCommand,
    json: bool,
) -> Result<String, CommandError> {
    match command {
        CertsCommand::List => {
            let answer = target.call(Method::GET, "/_spike/certs", None).await?;
            if json {
                return Ok(format!(
                    "{}\n",
                    serde_json::to_string_pretty(&answer).unwrap_or_default()
                ));
            }
            Ok(list_table(&answer, crate::util::now_ms() / 1000))
        }
    }
}

fn list_table(answer: &Value, now: u64) -> String {
    let certificates = answer["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = if certificates.is_empty() {
        "no certificates: the server speaks plain HTTP (--tls-cert/--tls-key or --acme-domain for HTTPS)\n".to_string()
    } else {
        let mut rows = vec![[
            "NAMES".to_string(),
            "SOURCE".into(),
            "EXPIRES".into(),
            "RENEWS".into(),
            "FAILURES".into(),
        ]];
        for cert in &certificates {
            let names: Vec<&str> = cert["names"]
                .as_array()
                .map(|n| n.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let when = |v: &Value| v.as_u64().map_or("-".to_string(), |t| in_words(t, now));
            rows.push([
                names.join(","),
                cert["source"].as_str().unwrap_or("-").into(),
                when(&cert["not_after"]),
                when(&cert["renew_at"]),
                cert["renewal_failures"]
                    .as_u64()
                    .map_or("-".into(), |n| n.to_string()),
            ]);
        }
        table(&rows)
    };
    if let Some(error) = answer["acme"]["last_error"].as_str() {
        out.push_str(&format!("last ACME error: {error}\n"));
    }
    out
}

/// A Unix time as the distance from `now`: "in 59d", "3h ago".
fn in_words(t: u64, now: u64) -> String {
    let (span, future) = match t >= now {
        true => (t - now, true),
        false => (now - t, false),
    };
    let text = match span {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    };
    match future {
        true => format!("in {text}"),
        false => format!("{text} ago"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_when_in_words() {
        let answer = serde_json::json!({
            "certificates": [{
                "names": ["a.test", "www.a.test"], "source": "acme",
                "not_after": 1_000 + 90 * 86_400, "renew_at": 1_000 + 60 * 86_400,
                "renewal_failures": 2,
            }],
            "acme": { "last_error": "validation: connection refused" },
        });
        let text = list_table(&answer, 1_000);
        assert!(
            text.contains("a.test,www.a.test  acme    in 90d   in 60d  2"),
            "{text}"
        );
        assert!(text.contains("last ACME error: validation: connection refused"));
        let none = list_table(&serde_json::json!({ "certificates": [] }), 0);
        assert!(none.contains("plain HTTP"));
    }
}
