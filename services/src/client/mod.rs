//! The client commands of the `taskforge` binary: deploy a function, invoke
//! it, list executions and workers — talking gRPC to a scheduler.
//!
//! Output is for a person by default (a line or a small table) and JSON with
//! `--json`, in the same shapes the HTTP gateway answers with, so scripts can
//! use either. A command that fails exits non-zero with the reason on stderr;
//! `invoke --wait` also exits non-zero when the execution did not complete.

mod render;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use tonic::Code;

use taskforge_proto::common::{ExecutionInfo, Function};
use taskforge_proto::scheduler::{
    GetFunctionRequest, ListExecutionsRequest, ListFunctionsRequest, ListWorkersRequest,
    RegisterFunctionRequest, TriggerExecutionRequest,
};

use crate::auth::{self, Credentials, SchedulerClient, Token};
use crate::duration::parse_duration;
use crate::gateway::view::is_terminal;
use crate::net::{self, ChannelConfig};
use crate::tls::ClientTlsArgs;

type Client = SchedulerClient;

/// How the client commands reach the scheduler and print what they get.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// The scheduler's gRPC address; with standbys, all of them
    /// (URL,URL,...): calls go to whichever leads.
    #[arg(
        long,
        env = "TASKFORGE_SCHEDULER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub scheduler: String,
    /// Print JSON instead of text for a person.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// The scheduler's API token, if it asks for one.
    #[arg(long, env = "TASKFORGE_API_TOKEN", hide_env_values = true, global = true, value_parser = token)]
    pub api_token: Option<Token>,
}

fn token(text: &str) -> Result<Token, String> {
    Token::new(text)
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The function's code: a `.py` or `.js` handler, or a `.wasm`/`.wat`
    /// module (other languages by `--language`).
    pub file: PathBuf,
    /// Its name (default: the file's name without extension).
    #[arg(long)]
    pub name: Option<String>,
    /// Its language (default: from the file's extension: .py is `python`,
    /// .js, .mjs and .cjs are `javascript`, .wasm and .wat are `wasm`).
    #[arg(long)]
    pub language: Option<String>,
    /// Start-to-close timeout of each attempt (default: the platform's).
    #[arg(long, value_parser = duration)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// The function: its id, or its name if that is unique.
    pub function: String,
    /// The payload (JSON or any text); `-` reads it from standard input.
    /// Default: `null`.
    pub payload: Option<String>,
    /// Wait up to this long for the result and print it (e.g. `5s`); without
    /// it, print the execution's id as soon as it is accepted.
    #[arg(long, value_parser = duration)]
    pub wait: Option<Duration>,
    /// Makes retrying this command safe: the same key returns the same
    /// execution instead of starting another.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Only executions in this status (PENDING, RUNNING, COMPLETED, FAILED,
    /// TIMED_OUT, CANCELLED).
    #[arg(long)]
    pub status: Option<String>,
    /// Only executions of this function id.
    #[arg(long)]
    pub function: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Args, Debug)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub connection: Connection,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|error| format!("{text:?} is not a duration: {error}"))
}

/// What a command printed and whether it succeeded.
#[derive(Debug)]
pub struct Printed {
    pub text: String,
    pub success: bool,
}

impl Printed {
    fn ok(text: String) -> Printed {
        Printed {
            text,
            success: true,
        }
    }
}

fn connect(connection: &Connection) -> Result<Client, String> {
    let channel =
        net::connect_schedulers(&connection.scheduler, &ChannelConfig::default(), |url| {
            connection.tls.config(url)
        })?;
    let credentials = Credentials::new(connection.api_token.as_ref());
    Ok(auth::scheduler_client(channel, credentials)
        .max_decoding_message_size(net::FROM_SCHEDULER_LIMIT))
}

/// Says what went wrong in a call, naming the scheduler when it is unreachable.
fn failed(what: &str, connection: &Connection, status: tonic::Status) -> String {
    match status.code() {
        Code::Unavailable => format!(
            "{what}: the scheduler at {} is unreachable: {}",
            connection.scheduler,
            status.message()
        ),
        _ => format!("{what}: {}", status.message()),
    }
}

/// The language a file's extension implies.
fn language_of(file: &Path) -> Option<&'static str> {
    match file.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "wasm" | "wat" => Some("wasm"),
        "py" => Some("python"),
        "js" | "mjs" | "cjs" => Some("javascript"),
        _ => None,
    }
}

pub async fn deploy(args: DeployArgs) -> Result<Printed, String> {
    let code = std::fs::read(&args.file)
        .map_err(|error| format!("cannot read {}: {error}", args.file.display()))?;
    let language = match (&args.language, language_of(&args.file)) {
        (Some(language), _) => language.clone(),
        (None, Some(language)) => language.to_string(),
        (None, None) => {
            return Err(format!(
                "cannot tell the language of {} from its extension (.py, .js, .wasm, .wat); \
                 say it with --language",
                args.file.display()
            ));
        }
    };
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .file
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .ok_or_else(|| {
                format!(
                    "{} has no file name: say one with --name",
                    args.file.display()
                )
            })?,
    };
    let timeout_ms = args.timeout.map_or(0, |timeout| {
        timeout.as_millis().clamp(1, u128::from(u64::MAX)) as u64
    });
    let request = RegisterFunctionRequest {
        name: name.clone(),
        language: language.clone(),
        code: Bytes::from(code),
        timeout_ms,
        ..Default::default()
    };
    let mut client = connect(&args.connection)?;
    let function_id = client
        .register_function(request)
        .await
        .map_err(|status| failed("deploy refused", &args.connection, status))?
        .into_inner()
        .function_id;
    Ok(Printed::ok(if args.connection.json {
        render::json(&serde_json::json!({
            "function_id": function_id,
            "name": name,
            "language": language,
        }))
    } else {
        format!("deployed {name} ({language}) as {function_id}\n")
    }))
}

/// The id of `function`: an id the scheduler knows, else the one function
/// with that name.
async fn resolve_function(client: &mut Client, function: &str) -> Result<String, tonic::Status> {
    let by_id = client
        .get_function(GetFunctionRequest {
            function_id: function.to_string(),
        })
        .await;
    match by_id {
        Ok(found) => return Ok(found.into_inner().function_id),
        Err(status) if status.code() == Code::NotFound => {}
        Err(status) => return Err(status),
    }
    let mut named: Vec<Function> = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_functions(ListFunctionsRequest {
                limit: 1000,
                after_function_id: after,
            })
            .await?
            .into_inner();
        named.extend(page.functions.into_iter().filter(|f| f.name == function));
        if page.next_after_function_id.is_empty() {
            break;
        }
        after = page.next_after_function_id;
    }
    match named.as_slice() {
        [one] => Ok(one.function_id.clone()),
        [] => Err(tonic::Status::not_found(format!(
            "no function has the id or name {function:?}"
        ))),
        many => Err(tonic::Status::failed_precondition(format!(
            "{} functions are named {function:?}: use an id ({})",
            many.len(),
            many.iter()
                .map(|f| f.function_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn read_payload(payload: Option<&str>) -> Result<Bytes, String> {
    match payload {
        None => Ok(Bytes::from_static(b"null")),
        Some("-") => {
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                .map_err(|error| format!("cannot read the payload from standard input: {error}"))?;
            Ok(Bytes::from(input))
        }
        Some(text) => Ok(Bytes::copy_from_slice(text.as_bytes())),
    }
}

pub async fn invoke(args: InvokeArgs) -> Result<Printed, String> {
    let payload = read_payload(args.payload.as_deref())?;
    let mut client = connect(&args.connection)?;
    let function_id = resolve_function(&mut client, &args.function)
        .await
        .map_err(|status| failed("invoke refused", &args.connection, status))?;
    let request = TriggerExecutionRequest {
        function_id,
        payload,
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        ..Default::default()
    };
    let Some(wait) = args.wait else {
        let execution_id = client
            .trigger_execution(request)
            .await
            .map_err(|status| failed("invoke refused", &args.connection, status))?
            .into_inner()
            .execution_id;
        return Ok(Printed::ok(if args.connection.json {
            render::json(&serde_json::json!({"execution_id": execution_id, "status": "ACCEPTED"}))
        } else {
            format!("{execution_id} ACCEPTED\n")
        }));
    };
    let mut updates = client
        .trigger_and_watch_execution(request)
        .await
        .map_err(|status| failed("invoke refused", &args.connection, status))?
        .into_inner();
    let mut last: Option<ExecutionInfo> = None;
    let followed = tokio::time::timeout(wait, async {
        while let Some(info) = updates.message().await? {
            let done = is_terminal(&info.status);
            last = Some(info);
            if done {
                break;
            }
        }
        Ok::<(), tonic::Status>(())
    })
    .await;
    if let Ok(Err(status)) = followed {
        return Err(failed(
            "lost the execution's updates",
            &args.connection,
            status,
        ));
    }
    let info = last.ok_or("the scheduler sent no state for the execution")?;
    let finished = is_terminal(&info.status);
    let mut text = if args.connection.json {
        render::json(&crate::gateway::view::JobView::from_info(&info))
    } else {
        render::execution(&info)
    };
    if !finished && !args.connection.json {
        text.push_str(&format!(
            "still {} after {wait:?}; follow it with `taskforge jobs`\n",
            info.status
        ));
    }
    Ok(Printed {
        text,
        success: info.status == "COMPLETED",
    })
}

pub async fn jobs(args: JobsArgs) -> Result<Printed, String> {
    let mut client = connect(&args.connection)?;
    let request = ListExecutionsRequest {
        status: args.status.clone().unwrap_or_default().to_ascii_uppercase(),
        function_id: args.function.clone().unwrap_or_default(),
        limit: args.limit,
        after_execution_id: String::new(),
    };
    // A page may end early (size, scan bound): follow the cursor to `limit`.
    let mut executions = Vec::new();
    let mut request = request;
    while executions.len() < args.limit as usize {
        let page = client
            .list_executions(request.clone())
            .await
            .map_err(|status| failed("cannot list executions", &args.connection, status))?
            .into_inner();
        executions.extend(page.executions);
        if page.next_after_execution_id.is_empty() {
            break;
        }
        request.after_execution_id = page.next_after_execution_id;
        request.limit = args.limit - executions.len().min(args.limit as usize) as u32;
    }
    executions.truncate(args.limit as usize);
    Ok(Printed::ok(if args.connection.json {
        let views: Vec<_> = executions
            .iter()
            .map(crate::gateway::view::JobView::from_info)
            .collect();
        render::json(&views)
    } else {
        render::executions(&executions)
    }))
}

pub async fn workers(args: WorkersArgs) -> Result<Printed, String> {
    let mut client = connect(&args.connection)?;
    let workers = client
        .list_workers(ListWorkersRequest {})
        .await
        .map_err(|status| failed("cannot list workers", &args.connection, status))?
        .into_inner()
        .workers;
    Ok(Printed::ok(if args.connection.json {
        let views: Vec<_> = workers
            .iter()
            .map(crate::gateway::view::WorkerView::from)
            .collect();
        render::json(&views)
    } else {
        render::workers(&workers)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_comes_from_the_extension() {
        assert_eq!(language_of(Path::new("echo.wat")), Some("wasm"));
        assert_eq!(language_of(Path::new("dir/ECHO.WASM")), Some("wasm"));
        assert_eq!(language_of(Path::new("handler.py")), Some("python"));
        assert_eq!(language_of(Path::new("handler.mjs")), Some("javascript"));
        assert_eq!(language_of(Path::new("handler.txt")), None);
        assert_eq!(language_of(Path::new("noext")), None);
    }

    #[test]
    fn payloads_default_to_null() {
        assert_eq!(read_payload(None).unwrap(), Bytes::from_static(b"null"));
        assert_eq!(
            read_payload(Some("{\"a\":1}")).unwrap(),
            Bytes::from_static(b"{\"a\":1}")
        );
    }
}
