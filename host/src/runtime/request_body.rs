//! The request body as a guest reads it: cut off at the plugin's size
//! limit, and ended when the client stops sending while the guest waits for
//! more; either way the body says why, so the response can become a 413 or
//! a 408 whatever the guest made of the error.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;

/// The `Content-Length` a request declares, if it is a number.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub const BODY_OK: u8 = 0;
pub const BODY_OVERFLOWED: u8 = 1;
pub const BODY_STALLED: u8 = 2;

/// The request body as the guest reads it: it ends in an error once it
/// passes `remaining` bytes, or when the client sends nothing for `idle`
/// while the guest waits for more, and says which through `state` so that
/// the response can become a 413 or a 408.
pub struct RequestBody {
    inner: axum::body::Body,
    remaining: u64,
    state: Arc<AtomicU8>,
    idle: Duration,
    /// Armed when the guest first waits; re-armed after each chunk.
    stall_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    progressed: bool,
}

impl RequestBody {
    /// `inner`, at most `limit` bytes, stalling at most `idle`; `state`
    /// says how it ended.
    pub fn new(inner: axum::body::Body, limit: u64, idle: Duration, state: Arc<AtomicU8>) -> Self {
        Self {
            inner,
            remaining: limit,
            state,
            idle,
            stall_timer: None,
            progressed: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ErrorCode>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        self.state.store(BODY_OVERFLOWED, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(ErrorCode::HttpRequestBodySize(None))));
                    }
                    self.remaining -= n;
                }
                self.progressed = true;
                Poll::Ready(Some(Ok(frame)))
            }
            // The client went away mid-body.
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(ErrorCode::ConnectionTerminated))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = Instant::now() + self.idle;
                let progressed = std::mem::take(&mut self.progressed);
                let timer = match &mut self.stall_timer {
                    Some(timer) => {
                        if progressed {
                            timer.as_mut().reset(deadline);
                        }
                        timer
                    }
                    None => self
                        .stall_timer
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.state.store(BODY_STALLED, Ordering::Relaxed);
                        Poll::Ready(Some(Err(ErrorCode::ConnectionReadTimeout)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body_of(
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
        limit: u64,
        idle: Duration,
    ) -> (RequestBody, Arc<AtomicU8>) {
        let stream = tokio_stream_from(rx);
        let state = Arc::new(AtomicU8::new(BODY_OK));
        let body = RequestBody {
            inner: axum::body::Body::from_stream(stream),
            remaining: limit,
            state: state.clone(),
            idle,
            stall_timer: None,
            progressed: false,
        };
        (body, state)
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_fine_a_stalled_one_times_out() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (mut body, state) = body_of(rx, 1 << 20, Duration::from_secs(10));
        // A byte every 9 s never stalls for 10 s.
        for _ in 0..5 {
            let sender = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(9)).await;
                sender.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
            });
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        assert_eq!(state.load(Ordering::Relaxed), BODY_OK);
        // Then nothing: an error after 10 s, and the state says why.
        let start = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, ErrorCode::ConnectionReadTimeout));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(state.load(Ordering::Relaxed), BODY_STALLED);
    }

    #[tokio::test]
    async fn a_body_past_the_limit_overflows() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (mut body, state) = body_of(rx, 5, Duration::from_secs(10));
        tx.send(Ok(Bytes::from_static(b"1234"))).await.unwrap();
        tx.send(Ok(Bytes::from_static(b"56"))).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(state.load(Ordering::Relaxed), BODY_OVERFLOWED);
    }
}
