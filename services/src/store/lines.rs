//! Reading a file of lines written by appends that a crash may cut short.
//!
//! Shared by the logs and the history's segments, which follow the same
//! rules: a torn last line (no newline, or unreadable at the very end of the
//! file) is the tail of a write that never completed, so never acknowledged:
//! it is skipped with a warning. An unreadable line with more data after it
//! cannot come from a crash: it held acknowledged data, so reading fails
//! naming file and line, rather than drop it silently.

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::StoreError;

/// What reading a file found.
pub(crate) struct Lines {
    /// Bytes before a torn last line (all of them when there is none).
    pub(crate) clean_bytes: u64,
    /// The last line was torn.
    pub(crate) torn: bool,
}

/// Reads `file` a line at a time, `chunk` bytes at a time, handing each
/// line that is not blank to `each` with its place: its offset and length
/// (newline included) and its 1-based number. `each` says why a line cannot be read; see the module
/// documentation for what happens then.
pub(crate) fn read_lines(
    path: &Path,
    file: Box<dyn Read>,
    chunk: usize,
    warnings: &mut Vec<String>,
    mut each: impl FnMut(&[u8], Place) -> Result<(), String>,
) -> Result<Lines, StoreError> {
    let mut reader = BufReader::with_capacity(chunk, file);
    let read_error = |e| StoreError::io("read", path, e);
    // Reused from line to line; grows to the longest line, which the
    // message limit bounds.
    let mut line = Vec::new();
    let mut offset: u64 = 0;
    let mut number = 0;
    loop {
        line.clear();
        let length = reader.read_until(b'\n', &mut line).map_err(read_error)?;
        if length == 0 {
            return Ok(Lines {
                clean_bytes: offset,
                torn: false,
            });
        }
        number += 1;
        let Some(content) = line.strip_suffix(b"\n") else {
            warnings.push(format!(
                "{}:{number}: skipped a torn last line ({length} bytes, no newline): \
                 a write cut short by a crash",
                path.display(),
            ));
            return Ok(Lines {
                clean_bytes: offset,
                torn: true,
            });
        };
        let length = length as u64;
        if content.iter().all(u8::is_ascii_whitespace) {
            // Blank lines hold nothing (a hand-edited file).
            offset += length;
            continue;
        }
        let place = Place {
            offset,
            length,
            number,
        };
        match each(content, place) {
            Ok(()) => offset += length,
            Err(problem) if at_end(&mut reader).map_err(read_error)? => {
                warnings.push(format!(
                    "{}:{number}: skipped an unreadable last line ({problem}): \
                     a write cut short by a crash",
                    path.display()
                ));
                return Ok(Lines {
                    clean_bytes: offset,
                    torn: true,
                });
            }
            Err(problem) => {
                return Err(StoreError::Corrupt {
                    path: path.to_owned(),
                    line: number,
                    problem,
                });
            }
        }
    }
}

/// Where a line is in its file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place {
    pub(crate) offset: u64,
    /// Newline included.
    pub(crate) length: u64,
    /// 1-based.
    pub(crate) number: usize,
}

/// Whether nothing follows what was read so far.
fn at_end(reader: &mut impl BufRead) -> io::Result<bool> {
    loop {
        match reader.fill_buf() {
            Ok(rest) => return Ok(rest.is_empty()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
