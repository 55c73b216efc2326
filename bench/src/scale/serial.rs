//! Serial line rate, hub only: the Node reference has no serial link, and Mosquitto is an MQTT
//! broker. This runs the existing serial bench (`pipeline-bench --serial`, `bench/src/serial.rs`:
//! the hub's serial ports on pty pairs paced to 115200 baud 8N1, binary link vs JSON lines, one
//! dashboard) as a child process and keeps its table of medians.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use tokio::process::Command;

/// Runs `pipeline-bench --serial` for `seconds` per window, `repeat` times; returns its
/// "medians" table (markdown).
pub async fn run(pipeline_bench: &Path, seconds: u64, repeat: usize) -> Result<String> {
    let out = Command::new(pipeline_bench)
        .args([
            "--serial",
            "--seconds",
            &seconds.to_string(),
            "--repeat",
            &repeat.to_string(),
        ])
        .output()
        .await
        .with_context(|| format!("run {} --serial", pipeline_bench.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "pipeline-bench --serial failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let medians = text
        .find("### Serial line rate: medians")
        .context("pipeline-bench --serial printed no table of medians")?;
    Ok(text[medians..]
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned())
}
