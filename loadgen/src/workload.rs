//! What the load runs: the `--function` spec, the payloads, and what each
//! execution is expected to end as.
//!
//! A spec names one built-in handler (`echo`, `sleep:10ms`, `spin:1ms`,
//! `fail`), a WebAssembly module that echoes its stdin (`wasm:PATH` to a
//! `.wasm` or `.wat` file), a Python or JavaScript handler (`python:PATH`,
//! `javascript:PATH`; each execution's event is `{"name": "…"}`, as
//! `examples/hello.py` expects), or a weighted mix of them
//! (`mix:echo=80,sleep:10ms=20`). Each
//! distinct handler becomes one registered function. Request `k` of a run uses
//! the function at position `k` of a smooth weighted round-robin sequence, so
//! a mix is exact and the same on every run — no random numbers involved.
//!
//! Payloads are JSON (the gateway insists on it) of exactly `--payload-bytes`
//! bytes where the handler allows: a padded string for `echo` and `fail`, the
//! number of milliseconds for `sleep` and `spin` (padded as
//! `{"ms":10,"pad":"…"}` when more bytes are asked for).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use taskforge_services::duration::parse_duration;
use taskforge_services::runtime::process::Language;

/// One built-in handler with its argument, or a WebAssembly module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    /// Returns the payload.
    Echo,
    /// Waits this long on the worker's timer.
    Sleep(Duration),
    /// Burns CPU this long on a blocking thread.
    Spin(Duration),
    /// Always fails (its executions are expected to end `FAILED`).
    Fail,
    /// A WASI command module that writes its stdin to stdout (an echo).
    Wasm(SourceFile),
    /// A Python handler, run in a sandbox.
    Python(SourceFile),
    /// A JavaScript handler, run in a sandbox.
    JavaScript(SourceFile),
}

/// A function's code read from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub path: Arc<str>,
    /// As read: WAT text or binary.
    pub code: Bytes,
}

impl SourceFile {
    fn read(path: &str) -> Result<SourceFile, SpecError> {
        let code = std::fs::read(path).map_err(|error| SpecError::Unreadable {
            path: path.to_string(),
            reason: error.to_string(),
        })?;
        Ok(SourceFile {
            path: path.into(),
            code: Bytes::from(code),
        })
    }

    /// Binary modules start with `\0asm`; anything else is sent as WAT text.
    pub fn is_binary(&self) -> bool {
        self.code.starts_with(b"\0asm")
    }
}

/// What registering a handler sends.
#[derive(Clone, Debug)]
pub struct Definition {
    pub name: String,
    pub language: &'static str,
    pub code: Bytes,
}

impl Handler {
    /// The handler's name: a builtin function's `code`, or `wasm`.
    pub fn code(&self) -> &'static str {
        match self {
            Handler::Echo => "echo",
            Handler::Sleep(_) => "sleep",
            Handler::Spin(_) => "spin",
            Handler::Fail => "fail",
            Handler::Wasm(_) => "wasm",
            Handler::Python(_) => "python",
            Handler::JavaScript(_) => "javascript",
        }
    }

    fn source(&self) -> Option<&SourceFile> {
        match self {
            Handler::Wasm(source) | Handler::Python(source) | Handler::JavaScript(source) => {
                Some(source)
            }
            Handler::Echo | Handler::Sleep(_) | Handler::Spin(_) | Handler::Fail => None,
        }
    }

    /// The function to register for this handler.
    pub fn definition(&self) -> Definition {
        match self.source() {
            Some(source) => Definition {
                name: format!("loadgen-{}", self.code()),
                language: self.code(),
                code: source.code.clone(),
            },
            None => Definition {
                name: format!("loadgen-{}", self.code()),
                language: "builtin",
                code: Bytes::from_static(self.code().as_bytes()),
            },
        }
    }

    /// The terminal status an execution of this handler should reach.
    pub fn expected_status(&self) -> &'static str {
        match self {
            Handler::Fail => "FAILED",
            _ => "COMPLETED",
        }
    }

    /// How long one execution should run on its worker, if the handler says.
    pub fn nominal_run_time(&self) -> Option<Duration> {
        match self {
            Handler::Sleep(d) | Handler::Spin(d) => Some(*d),
            Handler::Echo
            | Handler::Fail
            | Handler::Wasm(_)
            | Handler::Python(_)
            | Handler::JavaScript(_) => None,
        }
    }

    /// The payload of `bytes` bytes (or as close as the handler allows).
    pub fn payload(&self, bytes: usize) -> Bytes {
        match self {
            Handler::Echo | Handler::Fail | Handler::Wasm(_) => Bytes::from(padded_string(bytes)),
            Handler::Python(_) | Handler::JavaScript(_) => {
                let frame = r#"{"name":}"#;
                let name = padded_string(bytes.saturating_sub(frame.len()));
                Bytes::from(format!(r#"{{"name":{name}}}"#))
            }
            Handler::Sleep(d) | Handler::Spin(d) => {
                let ms = milliseconds(*d);
                if bytes <= ms.len() {
                    return Bytes::from(ms);
                }
                let frame = format!(r#"{{"ms":{ms},"pad":}}"#);
                let pad = padded_string(bytes.saturating_sub(frame.len()));
                Bytes::from(format!(r#"{{"ms":{ms},"pad":{pad}}}"#))
            }
        }
    }

    fn parse(text: &str) -> Result<Handler, SpecError> {
        let (name, argument) = match text.split_once(':') {
            Some((name, argument)) => (name, Some(argument)),
            None => (text, None),
        };
        let duration = |argument: Option<&str>| -> Result<Duration, SpecError> {
            let argument = argument.ok_or_else(|| SpecError::MissingDuration(name.to_string()))?;
            parse_duration(argument).map_err(|e| SpecError::BadDuration {
                text: argument.to_string(),
                reason: e.to_string(),
            })
        };
        let handler = match name {
            "wasm" => {
                let path = argument.ok_or(SpecError::MissingModule)?;
                return Ok(Handler::Wasm(SourceFile::read(path)?));
            }
            "python" | "javascript" => {
                let path = argument.ok_or_else(|| SpecError::MissingSource(name.to_string()))?;
                let source = SourceFile::read(path)?;
                return Ok(if name == "python" {
                    Handler::Python(source)
                } else {
                    Handler::JavaScript(source)
                });
            }
            "echo" => Handler::Echo,
            "fail" => Handler::Fail,
            "sleep" => return Ok(Handler::Sleep(duration(argument)?)),
            "spin" => return Ok(Handler::Spin(duration(argument)?)),
            other => return Err(SpecError::UnknownHandler(other.to_string())),
        };
        match argument {
            None => Ok(handler),
            Some(_) => Err(SpecError::UnexpectedArgument(name.to_string())),
        }
    }
}

impl fmt::Display for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handler::Sleep(d) | Handler::Spin(d) => {
                write!(f, "{}:{}ms", self.code(), milliseconds(*d))
            }
            Handler::Echo | Handler::Fail => f.write_str(self.code()),
            Handler::Wasm(source) | Handler::Python(source) | Handler::JavaScript(source) => {
                write!(f, "{}:{}", self.code(), source.path)
            }
        }
    }
}

/// A `--function` value that could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "unknown function {0:?}: use echo, sleep:DURATION, spin:DURATION, fail, wasm:PATH, \
         python:PATH, javascript:PATH or mix:..."
    )]
    UnknownHandler(String),
    #[error("wasm needs a module file, e.g. wasm:examples/echo.wat")]
    MissingModule,
    #[error("{0} needs a source file, e.g. {0}:examples/hello.py")]
    MissingSource(String),
    #[error("cannot read the module {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{0} needs a duration, e.g. {0}:10ms")]
    MissingDuration(String),
    #[error("{0} takes no argument")]
    UnexpectedArgument(String),
    #[error("bad duration {text:?}: {reason}")]
    BadDuration { text: String, reason: String },
    #[error("bad weight {0:?} in the mix: use a whole number from 1 to 1000, e.g. echo=80")]
    BadWeight(String),
    #[error("the mix is empty: use e.g. mix:echo=80,sleep:10ms=20")]
    EmptyMix,
}

/// The whole `--function` spec: one or more handlers with weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    entries: Vec<(Handler, u32)>,
}

impl FunctionSpec {
    /// Parses `echo`, `sleep:10ms`, `spin:1ms`, `fail` or
    /// `mix:echo=80,sleep:10ms=20` (a missing weight is 1).
    pub fn parse(text: &str) -> Result<FunctionSpec, SpecError> {
        let text = text.trim();
        let Some(mix) = text.strip_prefix("mix:") else {
            return Ok(FunctionSpec {
                entries: vec![(Handler::parse(text)?, 1)],
            });
        };
        let mut entries: Vec<(Handler, u32)> = Vec::new();
        for part in mix.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (handler, weight) = match part.rsplit_once('=') {
                Some((handler, weight)) => {
                    let weight = weight
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|w| (1..=1000).contains(w))
                        .ok_or_else(|| SpecError::BadWeight(weight.to_string()))?;
                    (Handler::parse(handler.trim())?, weight)
                }
                None => (Handler::parse(part)?, 1),
            };
            match entries.iter_mut().find(|(h, _)| *h == handler) {
                Some((_, w)) => *w += weight,
                None => entries.push((handler, weight)),
            }
        }
        if entries.is_empty() {
            return Err(SpecError::EmptyMix);
        }
        Ok(FunctionSpec { entries })
    }

    /// Each handler with its weight, in the order given.
    /// The interpreted languages among the handlers, each once.
    pub fn interpreted(&self) -> Vec<Language> {
        let mut languages = Vec::new();
        for (handler, _) in &self.entries {
            let language = match handler {
                Handler::Python(_) => Language::Python,
                Handler::JavaScript(_) => Language::JavaScript,
                _ => continue,
            };
            if !languages.contains(&language) {
                languages.push(language);
            }
        }
        languages
    }

    pub fn entries(&self) -> &[(Handler, u32)] {
        &self.entries
    }

    /// The run time an execution should take on average, if every handler in
    /// the spec says how long it runs.
    pub fn nominal_run_time(&self) -> Option<Duration> {
        let total: u32 = self.entries.iter().map(|(_, w)| w).sum();
        let mut weighted = Duration::ZERO;
        for (handler, weight) in &self.entries {
            weighted += handler.nominal_run_time()? * *weight;
        }
        Some(weighted / total)
    }
}

impl fmt::Display for FunctionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [(handler, _)] = self.entries.as_slice() {
            return write!(f, "{handler}");
        }
        f.write_str("mix:")?;
        for (i, (handler, weight)) in self.entries.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            write!(f, "{comma}{handler}={weight}")?;
        }
        Ok(())
    }
}

/// One registered function of the workload.
#[derive(Clone, Debug)]
pub struct Function {
    pub handler: Handler,
    pub function_id: String,
    pub payload: Bytes,
}

/// The functions of a run, registered, and the order requests use them in.
#[derive(Clone, Debug)]
pub struct Workload {
    functions: Vec<Function>,
    sequence: Vec<usize>,
}

impl Workload {
    /// `registered` holds each handler of `spec` with its function id, in the
    /// spec's order.
    pub fn new(spec: &FunctionSpec, registered: Vec<String>, payload_bytes: usize) -> Workload {
        let functions = spec
            .entries
            .iter()
            .zip(registered)
            .map(|((handler, _), function_id)| Function {
                handler: handler.clone(),
                function_id,
                payload: handler.payload(payload_bytes),
            })
            .collect();
        let weights: Vec<u32> = spec.entries.iter().map(|&(_, w)| w).collect();
        Workload {
            functions,
            sequence: smooth_round_robin(&weights),
        }
    }

    /// The function request number `seq` runs.
    pub fn pick(&self, seq: u64) -> &Function {
        let slot = (seq % self.sequence.len() as u64) as usize;
        &self.functions[self.sequence[slot]]
    }
}

/// Smooth weighted round-robin (as in nginx): a sequence of indices, one
/// cycle long (the sum of the weights), in which index `i` appears `weights[i]`
/// times, spread as evenly as possible. Ties go to the lower index.
pub fn smooth_round_robin(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let mut best = 0;
        for i in 1..current.len() {
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best);
    }
    sequence
}

/// A JSON string of exactly `bytes` bytes (at least the two quotes).
fn padded_string(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes.max(2));
    text.push('"');
    text.extend(std::iter::repeat_n('x', bytes.saturating_sub(2)));
    text.push('"');
    text
}

/// Milliseconds as a JSON number: `10`, or `0.5` when not whole.
fn milliseconds(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros % 1000 == 0 {
        format!("{}", micros / 1000)
    } else {
        format!("{}", micros as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wasm_module_is_read_from_its_file() {
        let dir = std::env::temp_dir().join(format!("loadgen-wasm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("echo.wat");
        std::fs::write(&path, "(module)").unwrap();
        let spec = FunctionSpec::parse(&format!("wasm:{}", path.display())).unwrap();
        let [(Handler::Wasm(module), 1)] = spec.entries() else {
            panic!("{spec:?}");
        };
        assert!(!module.is_binary());
        let definition = spec.entries()[0].0.definition();
        assert_eq!(
            (definition.language, &definition.code[..]),
            ("wasm", &b"(module)"[..])
        );
        assert_eq!(spec.to_string(), format!("wasm:{}", path.display()));
        assert_eq!(FunctionSpec::parse("wasm"), Err(SpecError::MissingModule));
        assert!(matches!(
            FunctionSpec::parse("wasm:/no/such/module.wasm"),
            Err(SpecError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn python_and_javascript_handlers_are_read_from_their_files() {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        let text = format!("mix:python:{examples}/hello.py=3,javascript:{examples}/hello.js=1");
        let spec = FunctionSpec::parse(&text).unwrap();
        assert_eq!(spec.interpreted(), [Language::Python, Language::JavaScript]);
        let python = &spec.entries()[0].0;
        let definition = python.definition();
        assert_eq!(
            (definition.language, definition.name.as_str()),
            ("python", "loadgen-python")
        );
        assert!(definition.code.starts_with(b"# A Python function"));
        // The event is {"name": …}, padded to the asked size.
        let payload = python.payload(40);
        assert_eq!(payload.len(), 40);
        let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert!(event["name"].as_str().unwrap().starts_with("xxx"));
        assert_eq!(python.to_string(), format!("python:{examples}/hello.py"));
        assert_eq!(
            FunctionSpec::parse("javascript"),
            Err(SpecError::MissingSource("javascript".into()))
        );
        assert!(
            FunctionSpec::parse("echo")
                .unwrap()
                .interpreted()
                .is_empty()
        );
    }

    #[test]
    fn specs_parse() {
        let ms = Duration::from_millis;
        assert_eq!(
            FunctionSpec::parse("echo").unwrap().entries(),
            &[(Handler::Echo, 1)]
        );
        assert_eq!(
            FunctionSpec::parse("sleep:10ms").unwrap().entries(),
            &[(Handler::Sleep(ms(10)), 1)]
        );
        assert_eq!(
            FunctionSpec::parse("mix:echo=80,sleep:10ms=20,fail")
                .unwrap()
                .entries(),
            &[
                (Handler::Echo, 80),
                (Handler::Sleep(ms(10)), 20),
                (Handler::Fail, 1)
            ]
        );
        assert_eq!(
            FunctionSpec::parse("mix:echo=1,echo=2").unwrap().entries(),
            &[(Handler::Echo, 3)]
        );
        assert_eq!(
            FunctionSpec::parse("sleep"),
            Err(SpecError::MissingDuration("sleep".into()))
        );
        assert_eq!(
            FunctionSpec::parse("echo:1ms"),
            Err(SpecError::UnexpectedArgument("echo".into()))
        );
        assert_eq!(
            FunctionSpec::parse("mix:echo=0"),
            Err(SpecError::BadWeight("0".into()))
        );
        assert_eq!(FunctionSpec::parse("mix:"), Err(SpecError::EmptyMix));
        assert!(matches!(
            FunctionSpec::parse("nap"),
            Err(SpecError::UnknownHandler(_))
        ));
    }

    #[test]
    fn specs_print_as_parsed() {
        for text in ["echo", "sleep:10ms", "spin:0.5ms", "mix:echo=80,fail=20"] {
            assert_eq!(FunctionSpec::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn payloads_are_json_of_the_asked_size() {
        for bytes in [0, 2, 16, 100] {
            let payload = Handler::Echo.payload(bytes);
            assert_eq!(payload.len(), bytes.max(2));
            serde_json::from_slice::<serde_json::Value>(&payload).unwrap();
        }
        let sleep = Handler::Sleep(Duration::from_millis(10));
        assert_eq!(&sleep.payload(0)[..], b"10");
        let padded = sleep.payload(64);
        assert_eq!(padded.len(), 64);
        let value: serde_json::Value = serde_json::from_slice(&padded).unwrap();
        assert_eq!(value["ms"], 10);
        let half = Handler::Spin(Duration::from_micros(500)).payload(0);
        assert_eq!(&half[..], b"0.5");
    }

    #[test]
    fn a_mix_is_exact_and_evenly_spread() {
        assert_eq!(smooth_round_robin(&[1]), vec![0]);
        assert_eq!(smooth_round_robin(&[2, 1]), vec![0, 1, 0]);
        let sequence = smooth_round_robin(&[5, 1, 1]);
        assert_eq!(sequence, vec![0, 0, 1, 0, 2, 0, 0]);
        let sequence = smooth_round_robin(&[80, 20]);
        assert_eq!(sequence.iter().filter(|&&i| i == 1).count(), 20);
        // Never two of the rarer one in a row.
        assert!(sequence.windows(2).all(|w| w != [1, 1]));
    }

    #[test]
    fn nominal_run_time_of_a_mix() {
        let spec = FunctionSpec::parse("mix:sleep:10ms=1,sleep:20ms=1").unwrap();
        assert_eq!(spec.nominal_run_time(), Some(Duration::from_millis(15)));
        assert_eq!(
            FunctionSpec::parse("echo").unwrap().nominal_run_time(),
            None
        );
    }
}
