//! A whole cluster in the test's process, on loopback ports the system picks.

use taskforge_services::cluster::ClusterConfig;

use super::processes::TempDir;

/// `workers` × `pool_size` on ephemeral loopback ports, storing in `dir`.
pub fn loopback(dir: &TempDir, workers: u32, pool_size: u32) -> ClusterConfig {
    ClusterConfig {
        workers,
        pool_size,
        data_dir: Some(dir.path().to_path_buf()),
        http: "127.0.0.1:0".parse().unwrap(),
        grpc: "127.0.0.1:0".parse().unwrap(),
        ..ClusterConfig::default()
    }
}
