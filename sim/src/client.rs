//! The clients: turmoil client hosts that register the functions, trigger the
//! workload's requests on time, follow every execution to its end, and record
//! everything they see.
//!
//! A client behaves like a careful user of the gRPC API, not like a test with
//! inside knowledge: it learns an execution's id only from an ACCEPTED answer,
//! follows it on a watch stream (opened again whenever it breaks or stays
//! silent), confirms the terminal state with a status query, and at the end —
//! once every fault has healed — asks once more about everything it was ever
//! promised. turmoil's TCP never retransmits, so every await has a timeout; a
//! trigger that fails or goes unanswered is retried, and its outcome is
//! unknown (the scheduler may or may not have it; either is fine, since no
//! promise was made).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use taskforge_core::ExecutionId;
use taskforge_proto::common::ExecutionInfo;
use taskforge_proto::scheduler::scheduler_service_client::SchedulerServiceClient;
use taskforge_proto::scheduler::{
    GetExecutionStatusRequest, RegisterFunctionRequest, TriggerExecutionRequest,
    WatchExecutionRequest,
};
use tokio::time::timeout;
use tonic::transport::Channel;

use crate::cluster::{self, RuntimeName, SCHEDULER};
use crate::net::{self, SCHEDULER_PORT};
use crate::trace::{Event, Observation, Recorder, View};
use crate::workload::{Function, Request};

/// Longest wait for the answer to one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A watch that stays silent this long is opened again.
const WATCH_IDLE: Duration = Duration::from_secs(2);
/// Waits between retries grow from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(1);

/// What one client does, and until when it keeps trying.
#[derive(Clone, Debug)]
pub struct Plan {
    pub index: usize,
    pub requests: Vec<Request>,
    /// Every function is registered in each of these.
    pub runtimes: Vec<RuntimeName>,
    /// Every fault has healed by then; the final round of queries follows.
    pub healed_at: Duration,
    /// After this a client stops waiting for executions to finish: anything
    /// ACCEPTED and not finished by then is a liveness failure.
    pub give_up_at: Duration,
}

/// Simulated time since the run began.
pub(crate) fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

pub(crate) async fn sleep_until(at: Duration) {
    let now = now();
    if at > now {
        tokio::time::sleep(at - now).await;
    }
}

/// Retry delays: doubling from [`RETRY_FIRST`] up to [`RETRY_LAST`].
pub(crate) struct Retry(Duration);

impl Retry {
    pub(crate) fn new() -> Retry {
        Retry(RETRY_FIRST)
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(RETRY_LAST);
    }
}

/// What the tasks of one client share.
struct Client {
    index: usize,
    api: SchedulerServiceClient<Channel>,
    recorder: Recorder,
    give_up_at: Duration,
}

impl Client {
    fn record(&self, observation: Observation) {
        self.recorder.record(Event::Client {
            client: self.index,
            observation,
        });
    }
}

/// Runs one client host to the end of its plan.
pub async fn run(plan: Plan, recorder: Recorder) -> turmoil::Result {
    let channel = net::channel(SCHEDULER, SCHEDULER_PORT, &cluster::channel_config());
    let client = Arc::new(Client {
        index: plan.index,
        api: SchedulerServiceClient::new(channel),
        recorder,
        give_up_at: plan.give_up_at,
    });
    drive(client, plan).await
}

/// What a client host does with its plan, whatever protocol it speaks.
pub(crate) trait Protocol: Send + Sync + 'static {
    /// Registers `function` in `runtime`, retrying until it is registered.
    fn register(
        &self,
        function: Function,
        runtime: RuntimeName,
    ) -> impl Future<Output = Result<String, String>> + Send;
    /// Triggers `request` and follows it to its end; its id if it was accepted.
    fn follow(
        self: Arc<Self>,
        request: Request,
        function_id: String,
    ) -> impl Future<Output = Option<ExecutionId>> + Send;
    /// Asks once more what became of `execution`, recording the answer.
    fn query(&self, execution: ExecutionId) -> impl Future<Output = ()> + Send;
}

/// Registers every function, sends each request at its time and follows it,
/// then — once every fault has healed — checks that each promise still holds.
pub(crate) async fn drive<P: Protocol>(client: Arc<P>, plan: Plan) -> turmoil::Result {
    let mut functions = Vec::new();
    for &runtime in &plan.runtimes {
        for function in Function::ALL {
            let id = client.register(function, runtime).await?;
            functions.push(((function, runtime), id));
        }
    }
    let function_id = |wanted: (Function, RuntimeName)| {
        functions
            .iter()
            .find(|(registered, _)| *registered == wanted)
            .map(|(_, id)| id.clone())
            .unwrap_or_default()
    };

    let mut followers = Vec::new();
    for request in plan.requests {
        sleep_until(request.at).await;
        let function_id = function_id((request.function, request.runtime));
        followers.push(tokio::spawn(
            Arc::clone(&client).follow(request, function_id),
        ));
    }
    let mut promised = Vec::new();
    for follower in followers {
        promised.extend(follower.await?);
    }

    // Faults may have struck after an execution finished: once all have
    // healed, every promise must still hold.
    sleep_until(plan.healed_at).await;
    for execution in promised {
        client.query(execution).await;
    }
    Ok(())
}

impl Protocol for Client {
    fn register(
        &self,
        function: Function,
        runtime: RuntimeName,
    ) -> impl Future<Output = Result<String, String>> + Send {
        register(self, function, runtime)
    }

    fn follow(
        self: Arc<Self>,
        request: Request,
        function_id: String,
    ) -> impl Future<Output = Option<ExecutionId>> + Send {
        follow(self, request, function_id)
    }

    fn query(&self, execution: ExecutionId) -> impl Future<Output = ()> + Send {
        query(self, execution, self.give_up_at)
    }
}

/// Registers `function` in `runtime`, retrying until the scheduler answers.
async fn register(
    client: &Client,
    function: Function,
    runtime: RuntimeName,
) -> Result<String, String> {
    let mut retry = Retry::new();
    loop {
        let request = RegisterFunctionRequest {
            name: format!("sim-{runtime}-{}", function.code()),
            language: runtime.to_string(),
            code: Bytes::from_static(function.code().as_bytes()),
            // Every limit (timeout, attempts, ...) at the platform's default.
            ..RegisterFunctionRequest::default()
        };
        let mut api = client.api.clone();
        if let Ok(Ok(response)) = timeout(CALL_TIMEOUT, api.register_function(request)).await {
            let function_id = response.into_inner().function_id;
            client.record(Observation::Registered {
                function,
                runtime,
                function_id: function_id.clone(),
            });
            return Ok(function_id);
        }
        if now() >= client.give_up_at {
            return Err(format!(
                "client-{} could not register {function:?} in {runtime} before giving up",
                client.index
            ));
        }
        retry.wait().await;
    }
}

/// Triggers `request`, then follows the execution to its end. Returns its id
/// if the scheduler promised to run it.
async fn follow(client: Arc<Client>, request: Request, function_id: String) -> Option<ExecutionId> {
    let execution = trigger(&client, &request, function_id).await?;
    if watch(&client, execution).await {
        query(&client, execution, client.give_up_at).await;
    }
    Some(execution)
}

/// Sends the trigger until it is ACCEPTED, or gives up once every fault has
/// had time to heal.
async fn trigger(client: &Client, request: &Request, function_id: String) -> Option<ExecutionId> {
    let mut retry = Retry::new();
    loop {
        let trigger = TriggerExecutionRequest {
            function_id: function_id.clone(),
            payload: request.payload.clone(),
            timeout_ms: request.timeout.as_millis() as u64,
            max_attempts: request.max_attempts,
            // 0: the platform's default.
            schedule_to_start_timeout_ms: request
                .schedule_to_start
                .map_or(0, |limit| limit.as_millis() as u64),
            idempotency_key: String::new(),
        };
        let mut api = client.api.clone();
        let reason = match timeout(CALL_TIMEOUT, api.trigger_execution(trigger)).await {
            Ok(Ok(response)) => {
                let answer = response.into_inner();
                match ExecutionId::parse(&answer.execution_id) {
                    Some(execution) if answer.status == "ACCEPTED" => {
                        client.record(Observation::Accepted {
                            request: request.id,
                            execution,
                        });
                        return Some(execution);
                    }
                    _ => format!(
                        "unexpected answer {:?} {:?}",
                        answer.status, answer.execution_id
                    ),
                }
            }
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
        };
        client.record(Observation::TriggerFailed {
            request: request.id,
            reason,
        });
        if now() >= client.give_up_at {
            return None;
        }
        retry.wait().await;
    }
}

/// Follows `execution` on watch streams until one shows it terminal; false if
/// the client gave up first.
async fn watch(client: &Client, execution: ExecutionId) -> bool {
    let mut retry = Retry::new();
    loop {
        if now() >= client.give_up_at {
            client.record(Observation::GaveUp { execution });
            return false;
        }
        let request = WatchExecutionRequest {
            execution_id: execution.to_string(),
        };
        let mut api = client.api.clone();
        match timeout(CALL_TIMEOUT, api.watch_execution(request)).await {
            Ok(Ok(response)) => {
                let mut states = response.into_inner();
                while let Ok(Ok(Some(info))) = timeout(WATCH_IDLE, states.message()).await {
                    let view = view_of(&info);
                    let terminal = view.is_terminal();
                    client.record(Observation::Watched { execution, view });
                    if terminal {
                        return true;
                    }
                    retry = Retry::new();
                }
            }
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                client.record(Observation::Queried {
                    execution,
                    view: None,
                });
            }
            _ => {}
        }
        retry.wait().await;
    }
}

/// Asks for `execution`'s status until the scheduler answers (or `until`).
async fn query(client: &Client, execution: ExecutionId, until: Duration) {
    let mut retry = Retry::new();
    loop {
        let request = GetExecutionStatusRequest {
            execution_id: execution.to_string(),
        };
        let mut api = client.api.clone();
        if let Ok(Ok(response)) = timeout(CALL_TIMEOUT, api.get_execution_status(request)).await {
            let answer = response.into_inner();
            let view = (answer.status != "NOT_FOUND").then(|| View {
                status: answer.status,
                output: answer.output,
                error: answer.error,
            });
            client.record(Observation::Queried { execution, view });
            return;
        }
        if now() >= until {
            return;
        }
        retry.wait().await;
    }
}

fn view_of(info: &ExecutionInfo) -> View {
    View {
        status: info.status.clone(),
        output: info.output.clone(),
        error: info.error.clone(),
    }
}
