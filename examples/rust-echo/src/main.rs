//! A TaskForge function in Rust: the payload arrives on stdin, the output is
//! what is written to stdout. Returning from `main` (exit code 0) succeeds; a
//! non-zero exit fails the execution, quoting the end of stderr.

use std::io::{self, Read, Write};

fn main() {
    let mut payload = Vec::new();
    if let Err(error) = io::stdin().read_to_end(&mut payload) {
        eprintln!("cannot read the payload: {error}");
        std::process::exit(1);
    }
    if let Err(error) = io::stdout().write_all(&payload) {
        eprintln!("cannot write the output: {error}");
        std::process::exit(1);
    }
}
