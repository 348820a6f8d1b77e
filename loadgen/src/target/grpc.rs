//! Driving executions through the scheduler's gRPC API.
//!
//! One execution is, by default, one `TriggerAndWatchExecution` stream: its
//! first message is the execution's state once it is durably accepted (the
//! accept latency), then every change, ending after a terminal state. With
//! [`GrpcCall::TriggerThenWatch`] it is the seed's `TriggerExecution` followed
//! by a `WatchExecution` stream — two streams per execution, for schedulers
//! without the combined call, or to measure what a client of the separate
//! calls pays.
//!
//! Requests are spread over several channels (each one HTTP/2 connection): a
//! single connection serializes every call on one socket and one connection
//! task, and caps throughput well below what the scheduler takes.

use taskforge_proto::common::ExecutionInfo;
use taskforge_proto::scheduler::{
    GetClusterStatsRequest, RegisterFunctionRequest, TriggerExecutionRequest, WatchExecutionRequest,
};
use taskforge_services::auth::{self, Credentials, SchedulerClient};
use taskforge_services::net::{ChannelConfig, connect_lazy_tls};
use tokio::time::{Instant, timeout_at};
use tonic::Streaming;

use super::{ClusterSize, Failure, FailureKind, Observation, Stamps, TargetError, is_terminal};
use crate::workload::{Definition, Function};

/// Which calls one execution takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GrpcCall {
    /// One `TriggerAndWatchExecution` stream.
    TriggerAndWatch,
    /// `TriggerExecution`, then a `WatchExecution` stream.
    TriggerThenWatch,
}

impl GrpcCall {
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcCall::TriggerAndWatch => "TriggerAndWatchExecution",
            GrpcCall::TriggerThenWatch => "TriggerExecution + WatchExecution",
        }
    }
}

/// Clients of one scheduler over `connections` channels.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    lanes: Vec<SchedulerClient>,
    call: GrpcCall,
}

impl GrpcClient {
    /// Lazily connecting channels to the scheduler at `url` (`http://host:port`).
    pub fn new(
        url: &str,
        connections: usize,
        call: GrpcCall,
        credentials: Credentials,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<GrpcClient, TargetError> {
        let config = ChannelConfig::default();
        let lanes = (0..connections.max(1))
            .map(|_| {
                connect_lazy_tls(url, &config, tls.clone())
                    .map(|channel| auth::scheduler_client(channel, credentials.clone()))
                    .map_err(|e| TargetError::Address {
                        address: url.to_string(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(GrpcClient { lanes, call })
    }

    /// The client of channel `lane` (modulo the number of channels).
    pub fn lane(&self, lane: usize) -> SchedulerClient {
        self.lanes[lane % self.lanes.len()].clone()
    }

    pub(super) async fn cluster_size(&self) -> Result<ClusterSize, TargetError> {
        let stats = self
            .lane(0)
            .get_cluster_stats(GetClusterStatsRequest {})
            .await?
            .into_inner();
        Ok(ClusterSize {
            workers: stats.workers,
            capacity: stats.capacity,
        })
    }

    pub(super) async fn register(&self, definition: Definition) -> Result<String, TargetError> {
        let request = RegisterFunctionRequest {
            name: definition.name,
            language: definition.language.to_string(),
            code: definition.code,
            ..Default::default()
        };
        let response = self.lane(0).register_function(request).await?;
        Ok(response.into_inner().function_id)
    }

    pub(super) async fn execute(
        &self,
        lane: usize,
        function: &Function,
        deadline: Instant,
    ) -> Observation {
        // One deadline over the whole execution: a single timer.
        let mut accepted = None;
        let execution = async {
            match self.call {
                GrpcCall::TriggerAndWatch => {
                    self.trigger_and_watch(lane, function, &mut accepted).await
                }
                GrpcCall::TriggerThenWatch => {
                    self.trigger_then_watch(lane, function, &mut accepted).await
                }
            }
        };
        let followed = timeout_at(deadline, execution).await;
        followed.unwrap_or_else(|_| Observation::failed(accepted, timed_out()))
    }

    /// One stream: accepted with its first message.
    async fn trigger_and_watch(
        &self,
        lane: usize,
        function: &Function,
        accepted: &mut Option<Instant>,
    ) -> Observation {
        let mut client = self.lane(lane);
        let mut stream = match client.trigger_and_watch_execution(trigger(function)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Observation::failed(None, refused(&status)),
        };
        match stream.message().await {
            Ok(Some(first)) => {
                let at = Instant::now();
                *accepted = Some(at);
                if is_terminal(&first.status) {
                    let observation = finished(at, function, first);
                    read_to_the_end(&mut stream).await;
                    return observation;
                }
                follow(stream, at, function).await
            }
            Ok(None) => {
                let failure =
                    Failure::new(FailureKind::Trigger, "the stream ended before accepting");
                Observation::failed(None, failure)
            }
            Err(status) => Observation::failed(None, refused(&status)),
        }
    }

    /// Two streams: accepted with `TriggerExecution`'s answer.
    async fn trigger_then_watch(
        &self,
        lane: usize,
        function: &Function,
        accepted: &mut Option<Instant>,
    ) -> Observation {
        let mut client = self.lane(lane);
        let execution_id = match client.trigger_execution(trigger(function)).await {
            Ok(response) => response.into_inner().execution_id,
            Err(status) => return Observation::failed(None, refused(&status)),
        };
        let at = Instant::now();
        *accepted = Some(at);
        let watch = WatchExecutionRequest { execution_id };
        match client.watch_execution(watch).await {
            Ok(response) => follow(response.into_inner(), at, function).await,
            Err(status) => Observation::failed(Some(at), watch_broke(&status)),
        }
    }
}

fn trigger(function: &Function) -> TriggerExecutionRequest {
    TriggerExecutionRequest {
        function_id: function.function_id.clone(),
        payload: function.payload.clone(),
        ..Default::default()
    }
}

/// Reads states until a terminal one.
async fn follow(
    mut stream: Streaming<ExecutionInfo>,
    accepted: Instant,
    function: &Function,
) -> Observation {
    loop {
        match stream.message().await {
            Ok(Some(info)) if is_terminal(&info.status) => {
                let observation = finished(accepted, function, info);
                read_to_the_end(&mut stream).await;
                return observation;
            }
            Ok(Some(_)) => continue,
            Ok(None) => {
                let failure = Failure::new(
                    FailureKind::Watch,
                    "the watch ended before a terminal state",
                );
                return Observation::failed(Some(accepted), failure);
            }
            Err(status) => return Observation::failed(Some(accepted), watch_broke(&status)),
        }
    }
}

/// Reads the stream's end (its trailers, right behind the terminal state)
/// once the outcome is recorded: a stream dropped before its end costs both
/// sides a reset, and hyper's client counts resets against the connection.
async fn read_to_the_end(stream: &mut Streaming<ExecutionInfo>) {
    while let Ok(Some(_)) = stream.message().await {}
}

fn finished(accepted: Instant, function: &Function, info: ExecutionInfo) -> Observation {
    let stamps = Stamps {
        created_at_us: info.created_at_us,
        started_at_us: info.started_at_us,
        finished_at_us: info.finished_at_us,
    };
    Observation::finished(
        accepted,
        &function.handler,
        info.status,
        &info.error,
        stamps,
    )
}

fn refused(status: &tonic::Status) -> Failure {
    let message = format!("{:?}: {}", status.code(), status.message());
    Failure::new(FailureKind::Trigger, message)
}

fn watch_broke(status: &tonic::Status) -> Failure {
    let message = format!("{:?}: {}", status.code(), status.message());
    Failure::new(FailureKind::Watch, message)
}

fn timed_out() -> Failure {
    Failure::new(FailureKind::Timeout, "no terminal state within --timeout")
}
