//! The languages the platform knows, and what registration checks of each.
//!
//! A function's `language` names the runtime that runs it. Registration
//! refuses a language the platform does not know (listing those it does) and
//! checks the code up front where it can, so a function no worker could run
//! is refused with a 400 rather than failing every execution later:
//! - `builtin`: the code names a handler ([`Builtin::from_code`]);
//! - `wasm`: the code is a WebAssembly module, binary or WAT text (WAT is
//!   turned into binary here, so workers only ever see binary), and must be a
//!   WASI preview 1 *command*: it exports `_start` and imports nothing but
//!   WASI preview 1 functions. This needs only a parser, not a compiler, so
//!   the scheduler stays light.
//! - `python`, `javascript`: the code is UTF-8 text that defines or exports a
//!   `handler` (parsing it would need the interpreter on the scheduler's
//!   machine; a syntax error fails the execution with the interpreter's
//!   message instead).

use std::collections::BTreeMap;

use bytes::Bytes;
use wasmparser::{Parser, Payload, TypeRef, Validator};

use crate::functions::Builtin;

/// How registration checks a language's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Builtin,
    Wasm,
    Python,
    JavaScript,
}

/// The languages registration accepts.
#[derive(Clone, Debug)]
pub struct Languages {
    known: BTreeMap<String, Check>,
}

impl Default for Languages {
    fn default() -> Self {
        Languages::standard()
    }
}

impl Languages {
    /// What the platform's workers run: `builtin`, `wasm`, `python` and
    /// `javascript`.
    pub fn standard() -> Languages {
        let known = [
            ("builtin", Check::Builtin),
            ("wasm", Check::Wasm),
            ("python", Check::Python),
            ("javascript", Check::JavaScript),
        ]
        .into_iter()
        .map(|(name, check)| (name.to_string(), check))
        .collect();
        Languages { known }
    }

    /// Also accepts `name`, checked as builtin code (for workers that run the
    /// built-in handlers under another runtime name, as the simulation does).
    pub fn with_builtin_alias(mut self, name: &str) -> Languages {
        self.known.insert(name.to_ascii_lowercase(), Check::Builtin);
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.known.keys().map(String::as_str)
    }

    /// Checks `code` for `language`, returning the language's canonical name
    /// and the code to store (WAT becomes binary), or why it is refused.
    pub fn check(&self, language: &str, code: Bytes) -> Result<(String, Bytes), String> {
        let name = language.trim().to_ascii_lowercase();
        let Some(&check) = self.known.get(&name) else {
            return Err(format!(
                "unknown language {:?}: the platform runs {}",
                language.chars().take(64).collect::<String>(),
                self.names().collect::<Vec<_>>().join(", ")
            ));
        };
        let code = match check {
            Check::Builtin => {
                Builtin::from_code(&code).map_err(|error| error.to_string())?;
                code
            }
            Check::Wasm => wasm_command(&code)?,
            Check::Python => {
                script(&code, "Python", defines_python_handler)?;
                code
            }
            Check::JavaScript => {
                script(&code, "JavaScript", mentions_handler)?;
                code
            }
        };
        Ok((name, code))
    }
}

/// Every function of WASI preview 1 (`wasi_snapshot_preview1`). A module may
/// import any of them; the worker answers most with an error (no files, no
/// sockets, no environment), but linking must find each name.
pub const WASI_PREVIEW1: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Source text that `has_handler` accepts.
fn script(code: &[u8], language: &str, has_handler: fn(&str) -> bool) -> Result<(), String> {
    let text = std::str::from_utf8(code).map_err(|error| {
        format!(
            "the {language} source is not UTF-8 text (at byte {})",
            error.valid_up_to()
        )
    })?;
    if text.contains('\0') {
        return Err(format!("the {language} source contains a NUL byte"));
    }
    if !has_handler(text) {
        return Err(format!(
            "the {language} source defines no `handler`: write a function \
             handler(event) that returns the output"
        ));
    }
    Ok(())
}

/// A top-level `def handler(`, `async def handler(` or `handler =`.
fn defines_python_handler(text: &str) -> bool {
    text.lines().any(|line| {
        let rest = line
            .strip_prefix("async ")
            .map(str::trim_start)
            .unwrap_or(line);
        let definition = rest
            .strip_prefix("def ")
            .is_some_and(|name| name.trim_start().starts_with("handler"));
        let assignment = line
            .strip_prefix("handler")
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        definition || assignment
    })
}

/// `handler` as a whole word (exports take many shapes: `exports.handler`,
/// `export function handler`, `module.exports = { handler }`).
fn mentions_handler(text: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    text.match_indices("handler").any(|(at, word)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The module the WASI preview 1 functions are imported from.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// A WASI preview 1 command module as binary, from binary or WAT `code`.
fn wasm_command(code: &[u8]) -> Result<Bytes, String> {
    let binary = if code.starts_with(b"\0asm") {
        code.to_vec()
    } else {
        let text = std::str::from_utf8(code).map_err(|_| {
            "the code is neither a binary WebAssembly module (it does not start with \
             \\0asm) nor WAT text (it is not UTF-8)"
                .to_string()
        })?;
        wat::parse_str(text).map_err(|error| format!("the WAT text does not parse: {error}"))?
    };
    Validator::new()
        .validate_all(&binary)
        .map_err(|error| format!("not a valid WebAssembly module: {error}"))?;
    let mut has_start = false;
    for payload in Parser::new(0).parse_all(&binary) {
        match payload.map_err(|error| format!("not a valid WebAssembly module: {error}"))? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import
                        .map_err(|error| format!("not a valid WebAssembly module: {error}"))?;
                    let is_function = matches!(import.ty, TypeRef::Func(_));
                    if import.module != WASI_MODULE
                        || !is_function
                        || !WASI_PREVIEW1.contains(&import.name)
                    {
                        return Err(format!(
                            "the module imports {:?} from {:?}: a function module may import \
                             only WASI preview 1 functions ({WASI_MODULE})",
                            import.name, import.module
                        ));
                    }
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export
                        .map_err(|error| format!("not a valid WebAssembly module: {error}"))?;
                    if export.name == "_start" && export.kind == wasmparser::ExternalKind::Func {
                        has_start = true;
                    }
                }
            }
            _ => {}
        }
    }
    if !has_start {
        return Err(
            "the module exports no `_start` function: it must be a WASI command \
             (payload on stdin, output on stdout), not a reactor or a library"
                .to_string(),
        );
    }
    Ok(Bytes::from(binary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(language: &str, code: &str) -> Result<(String, Bytes), String> {
        Languages::standard().check(language, Bytes::copy_from_slice(code.as_bytes()))
    }

    const ECHO: &str = r#"(module
        (import "wasi_snapshot_preview1" "fd_read" (func (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")))"#;

    #[test]
    fn builtin_code_names_a_handler() {
        assert_eq!(check(" BuiltIn ", "echo").unwrap().0, "builtin");
        assert!(
            check("builtin", "nope")
                .unwrap_err()
                .contains("unknown builtin handler")
        );
    }

    #[test]
    fn unknown_languages_are_refused_with_the_known_ones() {
        let error = check("cobol", "x").unwrap_err();
        assert!(
            error.contains("builtin, javascript, python, wasm"),
            "{error}"
        );
        let sim = Languages::standard().with_builtin_alias("other");
        assert!(sim.check("other", Bytes::from_static(b"echo")).is_ok());
    }

    #[test]
    fn scripts_must_be_text_with_a_handler() {
        for ok in [
            "def handler(event):\n    return event\n",
            "import json\nasync def handler(event):\n    return 1\n",
            "handler = lambda event: event\n",
        ] {
            assert_eq!(check("Python", ok).unwrap().0, "python", "{ok}");
        }
        for ok in [
            "exports.handler = (e) => e;",
            "export async function handler(event) { return event; }",
            "module.exports = { handler };",
        ] {
            assert_eq!(check("javascript", ok).unwrap().0, "javascript", "{ok}");
        }
        let cases = [
            (
                "python",
                "def main(event):\n    pass\n",
                "defines no `handler`",
            ),
            (
                "python",
                "    def handler(event): pass\n",
                "defines no `handler`",
            ),
            ("python", "x = 1\0", "NUL byte"),
            (
                "javascript",
                "exports.myhandler = 1;",
                "defines no `handler`",
            ),
        ];
        for (language, code, expected) in cases {
            let error = check(language, code).unwrap_err();
            assert!(error.contains(expected), "{code:?}: {error}");
        }
        let error = Languages::standard()
            .check("python", Bytes::from_static(&[b'a', 0xff]))
            .unwrap_err();
        assert!(error.contains("not UTF-8 text (at byte 1)"), "{error}");
    }

    #[test]
    fn wat_becomes_a_validated_binary_command() {
        let (language, code) = check("wasm", ECHO).unwrap();
        assert_eq!(language, "wasm");
        assert!(code.starts_with(b"\0asm"));
        // Binary is accepted as it is.
        let again = Languages::standard().check("wasm", code.clone()).unwrap();
        assert_eq!(again.1, code);
    }

    #[test]
    fn modules_that_no_worker_could_run_are_refused() {
        let cases = [
            ("(module", "does not parse"),
            ("\0asm\x01\0\0\0\x7f", "not a valid WebAssembly module"),
            (
                r#"(module (func (export "run")))"#,
                "exports no `_start` function",
            ),
            (
                r#"(module (import "env" "system" (func)) (func (export "_start")))"#,
                "imports \"system\" from \"env\"",
            ),
            (
                r#"(module (import "wasi_snapshot_preview1" "not_wasi" (func)) (func (export "_start")))"#,
                "imports \"not_wasi\"",
            ),
            (
                r#"(module (import "wasi_snapshot_preview1" "fd_read" (memory 1)) (func (export "_start")))"#,
                "imports \"fd_read\"",
            ),
        ];
        for (code, expected) in cases {
            let error = check("wasm", code).unwrap_err();
            assert!(error.contains(expected), "{code}: {error}");
        }
        let error = Languages::standard()
            .check("wasm", Bytes::from_static(&[0xff, 0xfe]))
            .unwrap_err();
        assert!(error.contains("neither a binary"), "{error}");
    }
}
