//! The checks of single manifest values: names, prefixes, environment
//! variable names, and a route's `rate_limit`.

use super::{LimitKey, RESERVED_PREFIXES, RouteLimit};
use crate::caps::rate_limit::Rule;

/// A route's `rate_limit`: `false`, or `{ requests, per_s, key }`.
pub(super) fn route_limit(value: &toml::Value) -> Result<RouteLimit, String> {
    const FORM: &str = "rate_limit must be false or { requests = 100, per_s = 60, key = \"ip\" }";
    let table = match value {
        toml::Value::Boolean(false) => return Ok(RouteLimit::Off),
        toml::Value::Table(t) => t,
        _ => return Err(FORM.into()),
    };
    let number = |field: &str| -> Result<u32, String> {
        match table.get(field) {
            Some(toml::Value::Integer(n)) => {
                u32::try_from(*n).map_err(|_| format!("rate_limit.{field} is out of range"))
            }
            Some(_) => Err(format!("rate_limit.{field} must be a number")),
            None => Err(format!("rate_limit needs {field}: {FORM}")),
        }
    };
    if let Some(unknown) = table
        .keys()
        .find(|k| !["requests", "per_s", "key"].contains(&k.as_str()))
    {
        return Err(format!(
            "rate_limit has an unknown field '{unknown}': {FORM}"
        ));
    }
    let rule =
        Rule::new(number("requests")?, number("per_s")?).map_err(|m| format!("rate_limit: {m}"))?;
    let key = match table.get("key").map(|k| k.as_str()) {
        None | Some(Some("ip")) => LimitKey::Ip,
        Some(Some("user")) => LimitKey::User,
        _ => return Err("rate_limit.key must be \"ip\" or \"user\"".into()),
    };
    Ok(RouteLimit::Rule { rule, key })
}

/// Environment variable names: a letter or `_`, then letters, digits, `_`.
pub(super) fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "env: '{name}' must be a letter or '_' followed by letters, digits or '_'"
        ))
    }
}

/// Longest `[config]` key and value, in bytes.
pub const MAX_CONFIG_KEY: usize = 256;
pub const MAX_CONFIG_VALUE: usize = 64 * 1024;

/// A `[config]` entry: a key of 1 to 256 bytes, a value of at most 64 KiB.
pub(super) fn check_config(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_CONFIG_KEY {
        return Err(format!(
            "config: a key must be 1 to {MAX_CONFIG_KEY} bytes, '{key}' is {}",
            key.len()
        ));
    }
    if value.len() > MAX_CONFIG_VALUE {
        return Err(format!(
            "config: '{key}' is {} bytes, the limit is {MAX_CONFIG_VALUE}",
            value.len()
        ));
    }
    Ok(())
}

/// Plugin names appear in URLs and logs: lower-case letters, digits, `-`, `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin name '{name}' must be 1 to 64 lower-case letters, digits, '-' or '_'"
        ))
    }
}

pub(super) fn check_resource_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' must be 1 to 128 letters, digits, '-', '_', '.' or ':'"
        ))
    }
}

pub(super) fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("route prefix '{prefix}' must start with '/'"));
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(format!("route prefix '{prefix}' must not end with '/'"));
    }
    if prefix.contains(['?', '#', '*', ' ']) || prefix.contains("//") {
        return Err(format!("route prefix '{prefix}' must be a plain path"));
    }
    // A broader prefix (even "/") is fine: the host's own routes are
    // matched before any plugin's.
    for reserved in RESERVED_PREFIXES {
        if crate::runtime::routes::prefix_matches(reserved, prefix) {
            return Err(format!(
                "route prefix '{prefix}' overlaps the host's own '{reserved}'"
            ));
        }
    }
    Ok(())
}
