//! The W × P sweep: how throughput scales with workers and pool sizes.
//!
//! Every cell of the grid gets a fresh embedded cluster of W workers × P
//! slots and the same load, and is set beside its theoretical ceiling,
//! `W × P / run time` — as many executions per second as the slots can hold
//! when every one of them is always busy. For a function with a known run time
//! (`sleep`, `spin`) the ratio measured / theoretical says how much of the
//! capacity the platform delivers; utilization says the same from the workers'
//! own stamps. A closed loop without `--concurrency` is sized per cell at four
//! clients per slot (at least 16), enough to keep every slot's queue non-empty.

use serde::Serialize;

use crate::cli::Config;
use crate::load::{Plan, Shape};
use crate::summary::Summary;
use crate::target::embedded::Shape as ClusterShape;

/// The grid: every worker count with every pool size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    pub workers: Vec<u32>,
    pub pools: Vec<u32>,
}

impl Grid {
    /// The cells, workers-major, in the order given.
    pub fn cells(&self) -> Vec<ClusterShape> {
        self.workers
            .iter()
            .flat_map(|&workers| {
                self.pools
                    .iter()
                    .map(move |&pool_size| ClusterShape { workers, pool_size })
            })
            .collect()
    }
}

/// The load a cell gets: the configured shape, with a closed loop sized to the
/// cell unless `--concurrency` was given.
pub fn plan_for(config: &Config, cell: ClusterShape) -> Plan {
    let mut plan = config.plan;
    if let (Shape::Closed { .. }, None) = (plan.shape, config.concurrency) {
        plan.shape = Shape::Closed {
            concurrency: (4 * cell.capacity() as usize).max(16),
        };
    }
    plan
}

/// One measured cell.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub shape: String,
    pub workers: u32,
    pub pool_size: u32,
    pub concurrency: Option<usize>,
    pub connections: usize,
    /// `W × P / nominal run time`, when the function has one.
    pub theoretical_per_s: Option<f64>,
    /// `throughput_per_s / theoretical_per_s`.
    pub efficiency: Option<f64>,
    #[serde(flatten)]
    pub summary: Summary,
}

impl Cell {
    pub fn new(config: &Config, shape: ClusterShape, plan: &Plan, summary: Summary) -> Cell {
        let connections = config.connections_for(plan);
        let theoretical = config
            .function
            .nominal_run_time()
            .filter(|t| !t.is_zero())
            .map(|t| f64::from(shape.capacity()) / t.as_secs_f64());
        Cell {
            shape: shape.to_string(),
            workers: shape.workers,
            pool_size: shape.pool_size,
            concurrency: match plan.shape {
                Shape::Closed { concurrency } => Some(concurrency),
                Shape::Open { .. } => None,
            },
            connections,
            theoretical_per_s: theoretical,
            efficiency: theoretical.map(|t| summary.throughput_per_s / t),
            summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_go_workers_first_and_size_their_load() {
        let grid = Grid {
            workers: vec![1, 2],
            pools: vec![1, 8],
        };
        let shapes: Vec<String> = grid.cells().iter().map(ToString::to_string).collect();
        assert_eq!(shapes, ["1x1", "1x8", "2x1", "2x8"]);

        let config = Config::try_from_args([
            "taskforge-loadgen",
            "--sweep-workers",
            "1,2",
            "--sweep-pool",
            "1,8",
        ])
        .unwrap();
        let concurrency = |cell| match plan_for(&config, cell).shape {
            Shape::Closed { concurrency } => concurrency,
            Shape::Open { .. } => unreachable!(),
        };
        assert_eq!(concurrency(grid.cells()[0]), 16);
        assert_eq!(concurrency(grid.cells()[3]), 64);
    }
}
