//! Finding the interpreters, and what each language needs in its sandbox.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An interpreted language a worker may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Language {
    Python,
    JavaScript,
}

/// Address space V8 reserves up front (code range, heap cages) beyond the
/// heap itself; node does not start under less than about 700 MiB however
/// small its heap. Reserved, not used: the heap limit bounds real memory.
const V8_RESERVATIONS: u64 = 1 << 30;

/// Host paths every interpreter needs, bound read-only when they exist.
const SYSTEM_PATHS: [&str; 9] = [
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    // The dynamic loader's cache: without it, libraries in multiarch
    // directories are not found.
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/alternatives",
];

impl Language {
    pub const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    /// The runtime's name, as functions' `language` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
        }
    }

    pub fn from_name(name: &str) -> Option<Language> {
        Language::ALL
            .into_iter()
            .find(|language| language.name() == name)
    }

    /// The command looked for on `PATH` when none is given.
    pub fn default_command(self) -> &'static str {
        match self {
            Language::Python => "python3",
            Language::JavaScript => "node",
        }
    }

    /// The interpreter's arguments: run the bootstrap.
    pub fn args(self, memory_bytes: u64) -> Vec<String> {
        match self {
            // -I: ignore the environment and the user's site directory;
            // -S: no `site` (the bootstrap adds site-packages itself);
            // -B: write no bytecode (the filesystem is read-only anyway).
            Language::Python => vec![
                "-I".into(),
                "-S".into(),
                "-B".into(),
                "-c".into(),
                include_str!("bootstrap.py").into(),
            ],
            Language::JavaScript => vec![
                format!("--max-old-space-size={}", (memory_bytes >> 20).max(16)),
                "-e".into(),
                include_str!("bootstrap.js").into(),
            ],
        }
    }

    /// The address-space limit for `memory_bytes` of memory.
    pub fn address_space_bytes(self, memory_bytes: u64) -> u64 {
        match self {
            Language::Python => memory_bytes,
            Language::JavaScript => memory_bytes.saturating_add(V8_RESERVATIONS),
        }
    }

    /// A handler that returns its event (the start-up probe).
    pub fn echo_source(self) -> &'static str {
        match self {
            Language::Python => "def handler(event):\n    return event\n",
            Language::JavaScript => "exports.handler = (event) => event;\n",
        }
    }

    /// Asks the interpreter where it really is (a `python3` on `PATH` may be
    /// a shell shim, as pyenv's is) and where its standard library lives.
    fn locate_script(self) -> [&'static str; 2] {
        match self {
            Language::Python => [
                "-c",
                "import sys; print(sys.executable); print(sys.base_prefix)",
            ],
            Language::JavaScript => [
                "-p",
                "process.execPath + '\\n' + require('path').resolve(process.execPath, '..', '..')",
            ],
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A language's interpreter, found once when the worker starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    pub language: Language,
    /// The real executable (symlinks resolved).
    pub program: PathBuf,
    /// Its installation prefix, bound read-only into the sandbox.
    pub prefix: PathBuf,
}

impl Interpreter {
    /// Finds `command` (a name looked up on `PATH`, or a path) by running it.
    pub fn find(language: Language, command: &OsStr) -> Result<Interpreter, String> {
        let shown = Path::new(command).display().to_string();
        let output = Command::new(command)
            .args(language.locate_script())
            .output()
            .map_err(|error| format!("cannot run {shown}: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "{shown} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let (Some(program), Some(prefix)) = (lines.next(), lines.next()) else {
            return Err(format!("{shown} did not say where it is"));
        };
        let program = std::fs::canonicalize(program)
            .map_err(|error| format!("cannot resolve {program}: {error}"))?;
        let prefix = std::fs::canonicalize(prefix)
            .map_err(|error| format!("cannot resolve {prefix}: {error}"))?;
        Ok(Interpreter {
            language,
            program,
            prefix,
        })
    }

    /// The host paths its sandbox binds read-only.
    pub fn read_only_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = SYSTEM_PATHS.iter().map(PathBuf::from).collect();
        for own in [
            self.prefix.as_path(),
            self.program.parent().unwrap_or(&self.prefix),
        ] {
            if !paths.iter().any(|path| own.starts_with(path)) {
                paths.push(own.to_path_buf());
            }
        }
        paths
    }
}
