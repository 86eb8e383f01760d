//! A request body must keep coming. Without this a client could send its head and then one byte a minute (a
//! slowloris on the body), holding its connection, its handler and (for a chat request) its admission for as long
//! as it liked: the HTTP server bounds only the head (`server.request_head_timeout_ms`).
//!
//! `guard` wraps every request that has a body: no byte for `server.body_idle_secs`, or less than
//! `server.body_min_bytes_per_sec` on average once the first `body_idle_secs` have passed, and the body ends with a
//! timed-out read, which every body reader answers as 408 `request_timeout` (`ApiError::body_broke`). A body that
//! arrives whole with its head (nearly every JSON request) never reads the clock or arms a timer.

use crate::config::ServerConfig;
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::HttpMessage;
use bytes::Bytes;
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Puts the pace bound on the request's body, if it has one. A WebSocket upgrade's "body" is the socket itself,
/// bounded by the realtime session's own idle rule, so it is left alone.
pub fn guard(req: &mut ServiceRequest, server: &ServerConfig) {
    if req.head().upgrade() {
        return;
    }
    match req.take_payload() {
        Payload::None => {}
        payload => {
            let paced = Paced::new(payload, Duration::from_secs(server.body_idle_secs), server.body_min_bytes_per_sec);
            req.set_payload(Payload::Stream { payload: Box::pin(paced) });
        }
    }
}

/// A body stream that fails with `TimedOut` when its sender stalls or crawls.
pub struct Paced<S> {
    inner: S,
    started: Instant,
    received: u64,
    idle: Duration,
    min_rate: u64,
    /// Armed when the body is waited for; dropped when a chunk comes.
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl<S> Paced<S> {
    pub fn new(inner: S, idle: Duration, min_bytes_per_sec: u64) -> Self {
        Paced {
            inner,
            started: Instant::now(),
            received: 0,
            idle,
            min_rate: min_bytes_per_sec,
            timer: None,
            done: false,
        }
    }

    /// When the body is late if nothing more comes: `idle` after now (the last chunk has just been handed on, or
    /// none came yet), and never later than the minimum rate allows for what has come so far.
    fn deadline(&self, now: Instant) -> Instant {
        let by_gap = now + self.idle;
        if self.min_rate == 0 {
            return by_gap;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        by_gap.min(self.started + self.idle + earned)
    }
}

/// The error a body reader sees when the pace bound ends the body.
pub fn timed_out() -> PayloadError {
    PayloadError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body stopped coming"))
}

/// Whether a body reader's error is the pace bound's.
pub fn is_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

impl<S: Stream<Item = Result<Bytes, PayloadError>> + Unpin> Stream for Paced<S> {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.received += chunk.len() as u64;
                self.timer = None;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                self.timer = None;
                Poll::Ready(other)
            }
            Poll::Pending => {
                if self.timer.is_none() {
                    let deadline = self.deadline(Instant::now());
                    self.timer = Some(Box::pin(tokio::time::sleep_until(deadline)));
                }
                let fired = self.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if !fired {
                    return Poll::Pending;
                }
                self.done = true;
                self.timer = None;
                Poll::Ready(Some(Err(timed_out())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chunks(plan: Vec<(u64, usize)>) -> Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> {
        Box::pin(futures::stream::iter(plan).then(|(wait_ms, size)| async move {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            Ok(Bytes::from(vec![b'x'; size]))
        }))
    }

    async fn outcome(plan: Vec<(u64, usize)>, idle_ms: u64, rate: u64) -> (usize, bool) {
        let mut paced = Paced::new(chunks(plan), Duration::from_millis(idle_ms), rate);
        let mut got = 0;
        while let Some(item) = paced.next().await {
            match item {
                Ok(chunk) => got += chunk.len(),
                Err(e) => return (got, is_timeout(&e)),
            }
        }
        (got, false)
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes_whatever_its_length() {
        let plan = vec![(500, 1024); 100];
        assert_eq!(outcome(plan, 1000, 1024).await, (102_400, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_longer_than_the_idle_bound_times_out() {
        let plan = vec![(10, 1000), (10, 1000), (1500, 1000)];
        assert_eq!(outcome(plan, 1000, 0).await, (2000, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_under_the_minimum_rate_times_out_though_no_gap_is_long() {
        // One byte every 900 ms never trips the 1 s gap, but averages far below 100 bytes a second.
        let plan = vec![(900, 1); 100];
        let (got, timed_out) = outcome(plan, 1000, 100).await;
        assert!(timed_out);
        assert!(got <= 2, "cut within the grace period, after {got} bytes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_starts_times_out() {
        let never: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(futures::stream::pending());
        let mut paced = Paced::new(never, Duration::from_millis(300), 1024);
        let first = paced.next().await;
        assert!(matches!(first, Some(Err(ref e)) if is_timeout(e)));
        assert!(paced.next().await.is_none(), "nothing after the timeout");
    }
}
