//! Files the binary carries, so that it works from any directory.
//!
//! Why: an installed `shardline` has no repository beside it, and a command whose default
//! is a path relative to the working directory works only from the repository's root. The
//! embedded bench's router needs its config and policies as files (the server loads and
//! watches a directory), so they are compiled in and written, when asked for, to a
//! directory of their own under the system's temporary directory. `--config` still names
//! any other config.

use std::io;
use std::path::{Path, PathBuf};

/// The embedded bench's config (`perf/bench/shardline.toml`).
const BENCH_CONFIG: &str = include_str!("../perf/bench/shardline.toml");
/// The embedded bench's four tenants, each with the same policy (`perf/bench/policies/`).
const BENCH_POLICIES: [(&str, &str); 4] = [
    (
        "tenant-0",
        include_str!("../perf/bench/policies/tenant-0/default.json"),
    ),
    (
        "tenant-1",
        include_str!("../perf/bench/policies/tenant-1/default.json"),
    ),
    (
        "tenant-2",
        include_str!("../perf/bench/policies/tenant-2/default.json"),
    ),
    (
        "tenant-3",
        include_str!("../perf/bench/policies/tenant-3/default.json"),
    ),
];

/// Writes the built-in bench config and its policies under the temporary directory (one
/// directory per version, rewritten only where it differs) and returns the config's path.
pub fn bench_config() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "shardline-{}-bench-config",
        env!("CARGO_PKG_VERSION")
    ));
    let config = dir.join("shardline.toml");
    put(&config, BENCH_CONFIG)?;
    for (tenant, policy) in BENCH_POLICIES {
        put(
            &dir.join("policies").join(tenant).join("default.json"),
            policy,
        )?;
    }
    Ok(config)
}

/// Writes `text` at `path` unless it already holds it; through a renamed temporary file,
/// so that a concurrent run never reads half a file.
fn put(path: &Path, text: &str) -> io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|held| held == text) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let temp = parent.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}
