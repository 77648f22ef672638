//! The plain-HTTP listener beside HTTPS (`--listen-http`, port 80): it
//! answers ACME's HTTP-01 challenges and sends everything else to the same
//! URL over HTTPS with a 308 (method and body kept).

use axum::Router;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode};

use super::errors::ApiError;
use crate::tls::acme::Challenges;

/// The redirecting app; `https_port` is the TLS listener's.
pub fn redirect_app(https_port: u16, challenges: Option<Challenges>) -> Router {
    Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            get(move |Path(token): Path<String>| answer(challenges.clone(), token)),
        )
        .fallback(move |req: Request| async move { redirect(https_port, &req) })
}

async fn answer(challenges: Option<Challenges>, token: String) -> Response {
    let found = match &challenges {
        Some(challenges) => challenges.http_answer(&token).await,
        None => None,
    };
    match found {
        Some(answer) => ([(http::header::CONTENT_TYPE, "text/plain")], answer).into_response(),
        None => ApiError::not_found("no ACME challenge with this token").into_response(),
    }
}

fn redirect(https_port: u16, req: &Request) -> Response {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_name);
    let Some(host) = host else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_host",
            "this address redirects to HTTPS, which needs the Host header's name",
        )
        .into_response();
    };
    let port = match https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    match HeaderValue::try_from(location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(http::header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "not a URL").into_response()
        }
    }
}

/// The name of a `Host` header (its port dropped), if it is a DNS name or
/// an address: nothing else goes into the `location`.
fn host_name(host: &str) -> Option<&str> {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal keeps its brackets.
        Some(rest) => &host[..rest.find(']')? + 2],
        None => host.split(':').next()?,
    };
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn only_a_name_goes_into_the_redirect() {
        assert_eq!(host_name("example.com"), Some("example.com"));
        assert_eq!(host_name("example.com:80"), Some("example.com"));
        assert_eq!(host_name("[::1]:80"), Some("[::1]"));
        assert_eq!(host_name("evil.com/x"), None);
        assert_eq!(host_name("a@b"), None);
        assert_eq!(host_name(""), None);
    }
}
