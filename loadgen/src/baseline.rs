//! The transport ceiling of this machine, measured in the same sitting.
//!
//! Before the real run, `--baseline` starts a trivial gRPC server that answers
//! `TriggerExecution` at once — same service, same request message, same
//! payload, no scheduler behind it — on a runtime with as many threads as the
//! cluster gets, and drives it with a closed loop of the same concurrency over
//! the same number of connections. Its calls per second are the most any
//! gRPC-triggered execution could reach here; our throughput divided by it
//! (`ratio_to_baseline`) compares across machines and across noisy sittings
//! far better than raw figures do. Then one caller alone for half as long:
//! its round trips (`baseline_latency_us`) are the least latency a
//! gRPC-triggered execution could have, the yardstick of sequential latency.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use taskforge_services::auth::Credentials;

use bytes::Bytes;
use serde::Serialize;
use taskforge_proto::common::{ExecutionInfo, Function};
use taskforge_proto::scheduler::scheduler_service_server::{
    SchedulerService, SchedulerServiceServer,
};
use taskforge_proto::scheduler::{
    CancelExecutionRequest, CancelExecutionResponse, ClusterStats, DeleteFunctionRequest,
    DeleteFunctionResponse, GetClusterStatsRequest, GetExecutionStatusRequest,
    GetExecutionStatusResponse, GetFunctionRequest, ListExecutionsRequest, ListExecutionsResponse,
    ListFunctionsRequest, ListFunctionsResponse, ListWorkersRequest, ListWorkersResponse,
    RegisterFunctionRequest, RegisterFunctionResponse, TriggerExecutionRequest,
    TriggerExecutionResponse, WatchExecutionRequest,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::load::{self, Operation, Plan, Shape, Stop};
use crate::measure::{Clock, Measurements, Percentiles, Recorder};
use crate::progress::{Progress, ProgressMode};
use crate::target::grpc::{GrpcCall, GrpcClient};
use crate::target::{Failure, FailureKind, Observation};

/// What the baseline measured.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub what: &'static str,
    pub concurrency: usize,
    pub connections: usize,
    pub window_s: f64,
    pub calls: u64,
    pub errors: u64,
    pub throughput_per_s: f64,
    /// Call round trips, in microseconds.
    pub latency_us: Percentiles,
    /// Calls of the sequential phase (one caller, half the duration).
    pub sequential_calls: u64,
    /// Round trips of one call at a time, in microseconds: the least latency
    /// any gRPC-triggered execution could have here.
    pub sequential_latency_us: Percentiles,
    #[serde(skip)]
    pub histogram: hdrhistogram::Histogram<u64>,
}

/// How to run the baseline.
#[derive(Clone, Debug)]
pub struct BaselineSpec {
    pub concurrency: usize,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub payload: Bytes,
    /// Threads of the trivial server's runtime (as many as the cluster's).
    pub server_threads: usize,
    pub progress: ProgressMode,
}

/// Starts the trivial server on its own runtime, measures it from `client`
/// (the load generator's runtime), and stops it.
pub fn measure(client: &tokio::runtime::Runtime, spec: &BaselineSpec) -> std::io::Result<Baseline> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spec.server_threads.max(1))
        .thread_name("loadgen-baseline")
        .enable_all()
        .build()?;
    let listener = server.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = server.spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(SchedulerServiceServer::new(Ceiling))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );

    let measured = client.block_on(closed_loop(&url, spec, spec.concurrency, spec.duration));
    // The sequential phase: one call at a time, for the latency a single
    // caller sees (targets on sequential latency are set against it).
    let sequential = measured.and_then(|measured| {
        let sequential = client.block_on(closed_loop(&url, spec, 1, spec.duration / 2))?;
        Ok((measured, sequential))
    });

    let _ = stop.send(());
    let _ = server.block_on(serving);
    server.shutdown_timeout(Duration::from_secs(1));
    let (measured, sequential) = sequential?;

    let window_s = measured.window().as_secs_f64();
    Ok(Baseline {
        what: "unary gRPC TriggerExecution answered at once by a trivial server",
        concurrency: spec.concurrency,
        connections: spec.connections,
        window_s,
        calls: measured.completed,
        errors: measured.errors,
        throughput_per_s: match window_s {
            0.0 => 0.0,
            s => measured.window_completions as f64 / s,
        },
        latency_us: Percentiles::of(&measured.latencies.e2e),
        sequential_calls: sequential.completed,
        sequential_latency_us: Percentiles::of(&sequential.latencies.e2e),
        histogram: measured.latencies.e2e,
    })
}

/// `concurrency` callers in a closed loop against the trivial server at
/// `url` for `duration` (after the spec's warm-up).
async fn closed_loop(
    url: &str,
    spec: &BaselineSpec,
    concurrency: usize,
    duration: Duration,
) -> std::io::Result<Measurements> {
    let lanes = GrpcClient::new(
        url,
        spec.connections.min(concurrency),
        GrpcCall::TriggerThenWatch,
        Credentials::none(),
        None,
    )
    .map_err(std::io::Error::other)?;
    let operation = Arc::new(Call {
        lanes,
        payload: spec.payload.clone(),
    });
    let plan = Plan {
        shape: Shape::Closed { concurrency },
        warmup: spec.warmup,
        stop: Stop::After(duration),
    };
    let clock = Clock::now();
    let (from, until) = plan.window(clock.origin());
    let recorder = Arc::new(Recorder::new(clock, from, until, Duration::from_secs(1)));
    let label = match concurrency {
        1 => "baseline, sequential",
        _ => "baseline",
    };
    let progress = Progress::start(
        spec.progress,
        recorder.clone(),
        plan,
        clock.origin(),
        label.to_string(),
    );
    load::drive(operation, plan, clock.origin(), recorder.clone()).await;
    progress.finish().await;
    let recorder = Arc::into_inner(recorder).expect("every load task has ended");
    Ok(recorder.finish())
}

/// One baseline call.
#[derive(Debug)]
struct Call {
    lanes: GrpcClient,
    payload: Bytes,
}

impl Operation for Call {
    async fn call(&self, lane: usize, _seq: u64) -> Observation {
        let mut client = self.lanes.lane(lane);
        let request = TriggerExecutionRequest {
            function_id: "baseline".to_string(),
            payload: self.payload.clone(),
            ..Default::default()
        };
        match client.trigger_execution(request).await {
            Ok(_) => {
                let now = Instant::now();
                Observation {
                    accepted: Some(now),
                    done: now,
                    status: Some("COMPLETED".to_string()),
                    stamps: None,
                    failure: None,
                }
            }
            Err(status) => {
                let message = format!("{:?}: {}", status.code(), status.message());
                Observation::failed(None, Failure::new(FailureKind::Trigger, message))
            }
        }
    }
}

/// The trivial server: accepts every trigger at once and does nothing else.
#[derive(Clone, Copy, Debug)]
struct Ceiling;

fn unimplemented() -> Status {
    Status::unimplemented("the baseline server only answers TriggerExecution")
}

type InfoStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<ExecutionInfo, Status>> + Send>>;

#[tonic::async_trait]
impl SchedulerService for Ceiling {
    async fn trigger_execution(
        &self,
        _request: Request<TriggerExecutionRequest>,
    ) -> Result<Response<TriggerExecutionResponse>, Status> {
        Ok(Response::new(TriggerExecutionResponse {
            execution_id: "0000000000000000".to_string(),
            status: "ACCEPTED".to_string(),
        }))
    }

    async fn register_function(
        &self,
        _request: Request<RegisterFunctionRequest>,
    ) -> Result<Response<RegisterFunctionResponse>, Status> {
        Err(unimplemented())
    }

    async fn get_execution_status(
        &self,
        _request: Request<GetExecutionStatusRequest>,
    ) -> Result<Response<GetExecutionStatusResponse>, Status> {
        Err(unimplemented())
    }

    type TriggerAndWatchExecutionStream = InfoStream;

    async fn trigger_and_watch_execution(
        &self,
        _request: Request<TriggerExecutionRequest>,
    ) -> Result<Response<InfoStream>, Status> {
        Err(unimplemented())
    }

    type WatchExecutionStream = InfoStream;

    async fn watch_execution(
        &self,
        _request: Request<WatchExecutionRequest>,
    ) -> Result<Response<InfoStream>, Status> {
        Err(unimplemented())
    }

    async fn list_functions(
        &self,
        _request: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        Err(unimplemented())
    }

    async fn get_function(
        &self,
        _request: Request<GetFunctionRequest>,
    ) -> Result<Response<Function>, Status> {
        Err(unimplemented())
    }

    async fn delete_function(
        &self,
        _request: Request<DeleteFunctionRequest>,
    ) -> Result<Response<DeleteFunctionResponse>, Status> {
        Err(unimplemented())
    }

    async fn list_executions(
        &self,
        _request: Request<ListExecutionsRequest>,
    ) -> Result<Response<ListExecutionsResponse>, Status> {
        Err(unimplemented())
    }

    async fn cancel_execution(
        &self,
        _request: Request<CancelExecutionRequest>,
    ) -> Result<Response<CancelExecutionResponse>, Status> {
        Err(unimplemented())
    }

    async fn list_workers(
        &self,
        _request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Err(unimplemented())
    }

    async fn get_cluster_stats(
        &self,
        _request: Request<GetClusterStatsRequest>,
    ) -> Result<Response<ClusterStats>, Status> {
        Err(unimplemented())
    }
}
