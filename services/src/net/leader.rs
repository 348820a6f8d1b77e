//! A channel to whichever of several schedulers leads.
//!
//! Schedulers sharing a database take turns leading; a standby answers
//! every call UNAVAILABLE with the leader's address in `taskforge-leader`
//! (see the scheduler's `route.rs`). [`LeaderChannel`] sends each call to
//! the scheduler it last found leading and follows those answers:
//!
//! - A client API call has a one-message request, so it is buffered and,
//!   when a standby answers or a scheduler cannot be reached at all (the
//!   request never left), sent again to the named leader or the next
//!   scheduler, each at most once per call. A standby did nothing with it,
//!   so sending it again is safe.
//! - A worker's stream cannot be sent twice: it goes to the current
//!   scheduler, and a standby's answer or a failed connection moves the
//!   channel on, so the worker's reconnect finds the leader.
//!
//! With one scheduler it is the plain channel, plus a pointer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::TryFutureExt;
use futures_util::future::{Either, ErrInto};
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::transport::Channel;
use tonic::transport::channel::ResponseFuture;
use tower::{Service, ServiceExt};

/// The metadata key of the leader's address in a standby's answer (the
/// scheduler's `LEADER_HEADER`).
const LEADER_HEADER: &str = "taskforge-leader";

/// The path prefix of the client API, whose requests are one message.
const API_PATH: &str = "/scheduler.SchedulerService/";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct LeaderChannel {
    inner: Arc<Inner>,
    /// The channel itself when there is only one scheduler: calls go
    /// straight to it.
    single: Option<Channel>,
}

#[derive(Debug)]
struct Inner {
    /// Each scheduler's address and channel, in the order given.
    schedulers: Vec<(String, Channel)>,
    /// Index of the scheduler calls go to.
    current: AtomicUsize,
}

impl LeaderChannel {
    /// A channel over `schedulers` (address, channel); calls start with the
    /// first. Panics if there are none (callers validate their lists).
    pub fn new(schedulers: Vec<(String, Channel)>) -> LeaderChannel {
        assert!(!schedulers.is_empty(), "a LeaderChannel needs a scheduler");
        let single = match schedulers.as_slice() {
            [(_, channel)] => Some(channel.clone()),
            _ => None,
        };
        LeaderChannel {
            inner: Arc::new(Inner {
                schedulers,
                current: AtomicUsize::new(0),
            }),
            single,
        }
    }

    /// One scheduler, nothing to follow.
    pub fn single(address: &str, channel: Channel) -> LeaderChannel {
        LeaderChannel::new(vec![(address.to_string(), channel)])
    }

    /// The address calls go to now.
    pub fn current(&self) -> &str {
        &self.inner.schedulers[self.inner.index()].0
    }
}

impl Inner {
    fn index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.schedulers.len()
    }

    /// After scheduler `from` turned a call away: the leader it named, if
    /// that is one of ours, else the next in the list.
    fn move_on(&self, from: usize, leader: Option<&str>) -> usize {
        let named = leader.and_then(|leader| {
            let leader = leader.trim_end_matches('/');
            self.schedulers
                .iter()
                .position(|(address, _)| address.trim_end_matches('/') == leader)
        });
        let next = match named {
            Some(index) if index != from => index,
            _ => (from + 1) % self.schedulers.len(),
        };
        // Only if no other call moved it meanwhile.
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
        next
    }

    async fn send(&self, index: usize, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let channel = self.schedulers[index].1.clone();
        Ok(channel.oneshot(request).await?)
    }
}

/// What a scheduler's answer says about where to go.
enum Verdict {
    Answered,
    /// A standby answered, naming the leader if it knows it.
    NotLeader(Option<String>),
    /// It could not be reached; the request did not leave.
    Unreachable,
}

fn verdict(result: &Result<Response<Body>, BoxError>) -> Verdict {
    match result {
        Ok(response) => match response.headers().get(LEADER_HEADER) {
            Some(leader) => Verdict::NotLeader(leader.to_str().ok().map(str::to_string)),
            None if is_standby_answer(response) => Verdict::NotLeader(None),
            None => Verdict::Answered,
        },
        Err(error) if never_sent(error.as_ref()) => Verdict::Unreachable,
        Err(_) => Verdict::Answered,
    }
}

/// A standby that knows no leader yet answers without naming one.
fn is_standby_answer(response: &Response<Body>) -> bool {
    let unavailable = response
        .headers()
        .get("grpc-status")
        .is_some_and(|status| status == "14");
    unavailable
        && response
            .headers()
            .get("grpc-message")
            .is_some_and(|message| message.as_bytes().starts_with(b"not%20the%20leader"))
}

/// Whether the error is a failed connection (refused, timed out): nothing
/// was sent. Errors on an established connection may have delivered it.
fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionRefused
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | AddrNotAvailable
            );
        }
        let text = error.to_string();
        if text.contains("tcp connect error") || text.contains("error trying to connect") {
            return true;
        }
        source = error.source();
    }
    false
}

/// One scheduler's channel as a [`LeaderChannel`].
impl From<Channel> for LeaderChannel {
    fn from(channel: Channel) -> LeaderChannel {
        LeaderChannel::single("", channel)
    }
}

type Following = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

impl Service<Request<Body>> for LeaderChannel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Either<ErrInto<ResponseFuture, BoxError>, Following>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.single {
            Some(channel) => channel.poll_ready(cx).map_err(Into::into),
            // Each call readies the channel it goes to.
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Some(channel) = &mut self.single {
            return Either::Left(channel.call(request).err_into());
        }
        let inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            let first = inner.index();
            if !request.uri().path().starts_with(API_PATH) {
                let result = inner.send(first, request).await;
                match verdict(&result) {
                    Verdict::Answered => {}
                    Verdict::NotLeader(leader) => {
                        inner.move_on(first, leader.as_deref());
                    }
                    Verdict::Unreachable => {
                        inner.move_on(first, None);
                    }
                }
                return result;
            }
            let (parts, body) = request.into_parts();
            let body: Bytes = body.collect().await?.to_bytes();
            let mut index = first;
            let mut tried = 0;
            loop {
                let mut again = Request::builder()
                    .method(parts.method.clone())
                    .uri(parts.uri.clone())
                    .version(parts.version)
                    .body(Body::new(Full::new(body.clone())))?;
                *again.headers_mut() = parts.headers.clone();
                let result = inner.send(index, again).await;
                tried += 1;
                let leader = match verdict(&result) {
                    Verdict::Answered => return result,
                    Verdict::NotLeader(leader) => leader,
                    Verdict::Unreachable => None,
                };
                index = inner.move_on(index, leader.as_deref());
                if tried >= inner.schedulers.len() {
                    return result;
                }
            }
        }))
    }
}
