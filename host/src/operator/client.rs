//! A client of a running server's admin API (`/_spike/*`), for the
//! operator commands: one request at a time, JSON answers, and errors that
//! say what to do (start the server, pass the right token, fix the
//! component).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::caps::outbound::{Timeouts, connect};

/// Where the server is and how to be let in.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's base URL, e.g. `http://127.0.0.1:8787`.
    pub server: String,
    /// The admin token the server was started with.
    pub token: Option<String>,
}

/// Why a command got no answer it could use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "'{0}' is not a server URL: give one like http://127.0.0.1:8787 (--server, SPIKE_SERVER or the CLI config)"
    )]
    BadUrl(String),
    #[error(
        "no spike server answers at {server} ({reason}): is it running? (`spike serve`, or --server / SPIKE_SERVER for another address)"
    )]
    Down { server: String, reason: String },
    #[error(
        "the server refused the token: pass the token it was started with (--token, SPIKE_ADMIN_TOKEN or the CLI config)"
    )]
    Unauthorized,
    #[error(
        "no admin token was given, and the server needs one: pass the token it was started with (--token, SPIKE_ADMIN_TOKEN, or token = \"…\" in ~/.config/spike/cli.toml)"
    )]
    NoToken,
    #[error("{0}")]
    AdminDisabled(String),
    /// The server's own answer: its status, code and message.
    #[error("the server answered {status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server's answer is not what this command expects: {0}")]
    Protocol(String),
}

/// How long any step may take: a server that accepts and then says
/// nothing must not hang the command. A push compiles the component
/// before it answers, which for a big one takes a while.
const CONNECT: Duration = Duration::from_secs(5);
const ANSWER: Duration = Duration::from_secs(300);

impl Target {
    /// Sends `method path` with `body`; the JSON answer of a 2xx.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<Value, ClientError> {
        let response = self.send(method, path, body).await?;
        let bytes = tokio::time::timeout(ANSWER, response.into_body().collect())
            .await
            .map_err(|_| self.down(format!("no answer within {} s", ANSWER.as_secs())))?
            .map_err(|e| self.down(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|_| ClientError::Protocol("not JSON".into()))
    }

    /// Sends `method path` with `body`; the bytes of a 2xx answer.
    pub async fn bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<Bytes, ClientError> {
        let response = self.send(method, path, body).await?;
        Ok(tokio::time::timeout(ANSWER, response.into_body().collect())
            .await
            .map_err(|_| self.down(format!("no answer within {} s", ANSWER.as_secs())))?
            .map_err(|e| self.down(e.to_string()))?
            .to_bytes())
    }

    /// `GET path`, each line of the answer to `each` as it comes, until
    /// the server ends it.
    pub async fn lines(&self, path: &str, mut each: impl FnMut(&str)) -> Result<(), ClientError> {
        let mut body = self.send(Method::GET, path, None).await?.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.down(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                each(String::from_utf8_lossy(&line[..end]).as_ref());
            }
        }
        Ok(())
    }

    fn down(&self, reason: String) -> ClientError {
        ClientError::Down {
            server: self.server.clone(),
            reason,
        }
    }

    /// Sends the request; the response if it is a 2xx, else the server's
    /// error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let base: Uri = self
            .server
            .parse()
            .map_err(|_| ClientError::BadUrl(self.server.clone()))?;
        let (Some(host), Some(scheme)) = (base.host(), base.scheme_str()) else {
            return Err(ClientError::BadUrl(self.server.clone()));
        };
        let https = match scheme {
            "http" => false,
            "https" => true,
            _ => return Err(ClientError::BadUrl(self.server.clone())),
        };
        let port = base.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| self.down(format!("cannot resolve {host}: {e}")))?
            .collect();
        let timeouts = Timeouts {
            connect: CONNECT,
            first_byte: ANSWER,
            between_bytes: ANSWER,
        };
        let mut sender = connect(&addrs, https, host, timeouts)
            .await
            .map_err(|e| self.down(e.to_string()))?;
        let authority = base.authority().map_or(host, |a| a.as_str());
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority);
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let (bytes, content_type) = body.unwrap_or((Bytes::new(), "application/octet-stream"));
        let request = request
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(bytes).map_err(|e| match e {}).boxed_unsync())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = tokio::time::timeout(ANSWER, sender.send_request(request))
            .await
            .map_err(|_| self.down(format!("no answer within {} s", ANSWER.as_secs())))?
            .map_err(|e| self.down(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = tokio::time::timeout(ANSWER, response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j["error"][name].as_str())
                .map(str::to_owned)
        };
        let code = field("code").unwrap_or_default();
        let message =
            field("message").unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
        Err(match (status, code.as_str()) {
            (StatusCode::UNAUTHORIZED, _) if self.token.is_none() => ClientError::NoToken,
            (StatusCode::UNAUTHORIZED, _) => ClientError::Unauthorized,
            (_, "admin_disabled") => ClientError::AdminDisabled(message),
            _ => ClientError::Refused {
                status: status.as_u16(),
                code,
                message,
            },
        })
    }
}
