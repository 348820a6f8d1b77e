//! How the client commands print for a person: one line per thing, columns
//! aligned, the output of an execution as the text it is.

use serde::Serialize;

use taskforge_proto::common::ExecutionInfo;
use taskforge_proto::scheduler::WorkerInfo;

use crate::gateway::output::decode_output;

pub(super) fn json(value: &impl Serialize) -> String {
    // Serialising our own view types cannot fail; keep the output an object
    // anyway rather than panic.
    let mut text = serde_json::to_string_pretty(value)
        .unwrap_or_else(|error| format!("{{\"error\":\"cannot encode the answer: {error}\"}}"));
    text.push('\n');
    text
}

/// `STATUS  execution  attempt N on worker  (duration)`, then the output or
/// the error.
pub(super) fn execution(info: &ExecutionInfo) -> String {
    let mut line = format!("{}  {}", info.status, info.execution_id);
    if info.attempt > 0 {
        line.push_str(&format!("  attempt {}", info.attempt));
    }
    if !info.worker_id.is_empty() {
        line.push_str(&format!(" on {}", info.worker_id));
    }
    if info.finished_at_us > 0 && info.started_at_us > 0 {
        let micros = info.finished_at_us.saturating_sub(info.started_at_us);
        line.push_str(&format!("  ({})", human_duration(micros)));
    }
    line.push('\n');
    if !info.error.is_empty() {
        line.push_str(&format!("error: {}\n", info.error));
    }
    if !info.output.is_empty() {
        let (output, _) = decode_output(&info.output);
        match output {
            serde_json::Value::String(text) => line.push_str(&text),
            other => line.push_str(&other.to_string()),
        }
        line.push('\n');
    }
    if !info.logs.is_empty() {
        line.push_str("logs:\n");
        for printed in info.logs.lines() {
            line.push_str("  ");
            line.push_str(printed);
            line.push('\n');
        }
    }
    line
}

pub(super) fn executions(list: &[ExecutionInfo]) -> String {
    if list.is_empty() {
        return "no executions\n".to_string();
    }
    let rows = list.iter().map(|info| {
        vec![
            info.execution_id.clone(),
            info.status.clone(),
            info.function_id.clone(),
            info.attempt.to_string(),
            or_dash(&info.worker_id),
            or_dash(&shorten(&info.error, 60)),
        ]
    });
    table(
        &[
            "EXECUTION",
            "STATUS",
            "FUNCTION",
            "ATTEMPT",
            "WORKER",
            "ERROR",
        ],
        rows,
    )
}

pub(super) fn workers(list: &[WorkerInfo]) -> String {
    if list.is_empty() {
        return "no workers connected\n".to_string();
    }
    let rows = list.iter().map(|worker| {
        let state = match (worker.quarantined, worker.draining) {
            (true, _) => "quarantined",
            (false, true) => "draining",
            (false, false) => "ready",
        };
        let runtimes = if worker.runtimes.is_empty() {
            "any".to_string()
        } else {
            worker.runtimes.join(",")
        };
        vec![
            worker.worker_id.clone(),
            format!("{}/{}", worker.in_flight, worker.pool_size),
            runtimes,
            state.to_string(),
        ]
    });
    table(&["WORKER", "BUSY/SLOTS", "RUNTIMES", "STATE"], rows)
}

fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut text = line(header.to_vec());
    for row in &rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

fn shorten(text: &str, limit: usize) -> String {
    let first_line = text.lines().next().unwrap_or_default();
    match first_line.char_indices().nth(limit) {
        Some((end, _)) => format!("{}...", &first_line[..end]),
        None => first_line.to_string(),
    }
}

fn human_duration(micros: u64) -> String {
    match micros {
        0..1_000 => format!("{micros} µs"),
        1_000..1_000_000 => format!("{:.1} ms", micros as f64 / 1e3),
        _ => format!("{:.2} s", micros as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn an_execution_reads_as_a_line_and_its_output() {
        let info = ExecutionInfo {
            execution_id: "00000000000000ab".into(),
            status: "COMPLETED".into(),
            output: Bytes::from_static(b"{\"sum\":5}"),
            attempt: 1,
            worker_id: "worker-1".into(),
            started_at_us: 1_000,
            finished_at_us: 2_500,
            ..Default::default()
        };
        assert_eq!(
            execution(&info),
            "COMPLETED  00000000000000ab  attempt 1 on worker-1  (1.5 ms)\n{\"sum\":5}\n"
        );
    }

    #[test]
    fn tables_align_their_columns() {
        let workers = [
            WorkerInfo {
                worker_id: "worker-1".into(),
                pool_size: 4,
                in_flight: 1,
                runtimes: vec!["builtin".into(), "wasm".into()],
                ..Default::default()
            },
            WorkerInfo {
                worker_id: "w".into(),
                pool_size: 8,
                quarantined: true,
                ..Default::default()
            },
        ];
        assert_eq!(
            super::workers(&workers),
            "WORKER    BUSY/SLOTS  RUNTIMES      STATE\n\
             worker-1  1/4         builtin,wasm  ready\n\
             w         0/8         any           quarantined\n"
        );
    }
}
