//! Waiting for executions through the scheduler's watch stream — never by
//! polling. Every wait has a generous guard so a bug shows up as a failure
//! naming what was awaited, not as a hung test.

use std::time::Duration;

use bytes::Bytes;
use taskforge_proto::common::ExecutionInfo;
use taskforge_proto::scheduler::{
    RegisterFunctionRequest, TriggerExecutionRequest, WatchExecutionRequest,
};

pub const GUARD: Duration = Duration::from_secs(60);

pub type Client = taskforge_services::auth::SchedulerClient;

/// Follows the execution's watch stream until `done` holds for a state.
pub async fn watch_until(
    client: &mut Client,
    id: &str,
    what: &str,
    done: impl Fn(&ExecutionInfo) -> bool,
) -> ExecutionInfo {
    let follow = async {
        let request = WatchExecutionRequest {
            execution_id: id.to_string(),
        };
        let mut stream = client.watch_execution(request).await?.into_inner();
        let mut last = None;
        while let Some(info) = stream.message().await? {
            if done(&info) {
                return Ok(info);
            }
            last = Some(info);
        }
        Err(tonic::Status::unknown(format!(
            "the watch ended before {what}; last state {last:?}"
        )))
    };
    match tokio::time::timeout(GUARD, follow).await {
        Ok(Ok(info)) => info,
        Ok(Err(status)) => panic!("execution {id}: {status}"),
        Err(_) => panic!("execution {id}: still waiting for {what} after {GUARD:?}"),
    }
}

pub fn is_terminal(info: &ExecutionInfo) -> bool {
    matches!(
        info.status.as_str(),
        "COMPLETED" | "FAILED" | "TIMED_OUT" | "CANCELLED"
    )
}

pub async fn terminal(client: &mut Client, id: &str) -> ExecutionInfo {
    watch_until(client, id, "a terminal state", is_terminal).await
}

pub async fn running(client: &mut Client, id: &str) -> ExecutionInfo {
    watch_until(client, id, "RUNNING", |info| info.status == "RUNNING").await
}

pub async fn register(client: &mut Client, code: &str) -> String {
    let request = RegisterFunctionRequest {
        name: code.to_string(),
        language: "builtin".to_string(),
        code: Bytes::from(code.to_string()),
        ..Default::default()
    };
    client
        .register_function(request)
        .await
        .expect("register")
        .into_inner()
        .function_id
}

pub async fn trigger(client: &mut Client, function_id: &str, payload: &str) -> String {
    let request = TriggerExecutionRequest {
        function_id: function_id.to_string(),
        payload: Bytes::from(payload.to_string()),
        ..Default::default()
    };
    let response = client
        .trigger_execution(request)
        .await
        .expect("trigger")
        .into_inner();
    assert_eq!(response.status, "ACCEPTED");
    response.execution_id
}
