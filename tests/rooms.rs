//! A room client for tests: a real WebSocket (tokio-tungstenite) that
//! reads the host's JSON frames, every await under a timeout.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tokio_tungstenite::tungstenite;

/// How long a test waits for any one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// Rooms with the text protocol at `/room`, relay at `/chat`, for a
/// plugin without a component.
pub const ROOMS: crate::Plugin = crate::Plugin {
    name: "rooms",
    guest: "",
    manifest: "[[rooms]]\nprefix = \"/room\"\nprotocol = \"text\"\n\
               [[rooms]]\nprefix = \"/chat\"\n",
};

pub struct RoomClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The welcome frame.
    pub welcome: Value,
}

impl RoomClient {
    /// Joins at `url` (`ws://…/room/x`), reading the welcome.
    pub async fn join(url: &str) -> Self {
        Self::try_join(url)
            .await
            .unwrap_or_else(|e| panic!("joining {url}: {e}"))
    }

    /// Joins, or the handshake's error (a refusal is an HTTP response).
    pub async fn try_join(url: &str) -> Result<Self, tungstenite::Error> {
        Self::try_join_as(url, None).await
    }

    /// Joins with `token` as the bearer token, if any.
    pub async fn try_join_as(url: &str, token: Option<&str>) -> Result<Self, tungstenite::Error> {
        let mut client = Self::open(url, token).await?;
        client.welcome = client.next().await;
        assert_eq!(client.welcome["type"], "welcome", "{}", client.welcome);
        // A long text follows in parts: joined into the welcome's `text`.
        if let Some(parts) = client.welcome["text_parts"].as_u64() {
            let mut text = String::new();
            for _ in 0..parts {
                let part = client.next().await;
                assert_eq!(part["type"], "text_part", "{part}");
                text.push_str(part["text"].as_str().expect("a part's text"));
            }
            client.welcome["text"] = Value::from(text);
        }
        Ok(client)
    }

    /// A socket the host accepted, no frame read yet (`welcome` is null).
    pub async fn open(url: &str, token: Option<&str>) -> Result<Self, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request()?;
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("a header value");
            request.headers_mut().insert("authorization", value);
        }
        let (ws, _) = crate::within(tokio_tungstenite::connect_async(request)).await?;
        Ok(Self {
            ws,
            welcome: Value::Null,
        })
    }

    /// This connection's id.
    pub fn id(&self) -> String {
        self.welcome["connection"].as_str().unwrap().to_string()
    }

    pub async fn send(&mut self, text: &str) {
        crate::within(self.ws.send(Message::text(text)))
            .await
            .expect("send");
    }

    pub async fn send_message(&mut self, message: Message) {
        crate::within(self.ws.send(message)).await.expect("send");
    }

    /// The next frame from the host, as JSON.
    pub async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("the connection is open")
                .expect("a frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next message from the host, whatever its kind.
    pub async fn next_message(&mut self) -> Message {
        tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
            .await
            .expect("a message within the timeout")
            .expect("the connection is open")
            .expect("a message")
    }

    /// The next message if one comes within `wait` (`None`: none came, or
    /// the connection ended).
    pub async fn message_within(&mut self, wait: Duration) -> Option<Message> {
        match tokio::time::timeout(wait, self.ws.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            _ => None,
        }
    }

    /// The next frame of `kind` (skipping presence and other kinds).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
            assert_ne!(frame["type"], "error", "{frame}");
        }
    }

    /// The next numbered event (`event` or `op`), skipping presence.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let frame = self.next().await;
            match frame["type"].as_str() {
                Some("event" | "op") => return frame,
                Some("join" | "leave") => continue,
                _ => panic!("expected an event, got {frame}"),
            }
        }
    }

    /// Reads until the host closes; its close code and reason (frames
    /// before it are skipped).
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            let next = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("closed within the timeout");
            match next {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (code.into(), reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("the connection failed before a close frame: {e}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// Closes from the client's side.
    pub async fn close(mut self) {
        let _ = crate::within(self.ws.close(None)).await;
    }
}

/// The HTTP status of a refused handshake.
pub fn refused_status(e: &tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// The `ws://` URL of `path` on a server at `http_url`.
pub fn ws_url(http_url: &str, path: &str) -> String {
    format!("{}{path}", http_url.replacen("http://", "ws://", 1))
}
