//! How many fsyncs per second the disk under a directory gives: group commit turns each
//! fsync into a batch of writes, so this bounds and explains the store's creates/s.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes 4 KiB and fsyncs it, in a loop, for about `duration` (at least once), in a
/// temporary file under `dir` (removed afterwards), and returns the fsyncs per second.
///
/// Uses a full `fsync` (as the bundled SQLite does) and cycles over the first 1 MiB of the
/// file. Returns 0.0 when the file cannot be created, written or synced (the error is logged).
pub fn measure_fsyncs_per_second(dir: &Path, duration: Duration) -> f64 {
    let name = format!(
        ".krust-fsync-probe-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let path = dir.join(name);
    let result = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .and_then(|file| run(file, duration));
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::debug!(path = %path.display(), error = %e, "removing the fsync probe file");
    }
    match result {
        Ok(rate) => rate,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "measuring fsyncs per second failed");
            0.0
        }
    }
}

fn run(mut file: File, duration: Duration) -> std::io::Result<f64> {
    const BLOCK: usize = 4096;
    const BLOCKS: u64 = 256;
    let buf = vec![0x5a_u8; BLOCK];
    let start = Instant::now();
    let mut n: u64 = 0;
    loop {
        file.seek(SeekFrom::Start((n % BLOCKS) * BLOCK as u64))?;
        file.write_all(&buf)?;
        file.sync_all()?;
        n += 1;
        if start.elapsed() >= duration {
            break;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_something_and_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rate = measure_fsyncs_per_second(dir.path(), Duration::from_millis(50));
        assert!(rate > 0.0);
        let left = std::fs::read_dir(dir.path()).expect("read_dir").count();
        assert_eq!(left, 0, "the probe file must be removed");
        let missing = dir.path().join("missing");
        assert_eq!(
            measure_fsyncs_per_second(&missing, Duration::from_millis(10)),
            0.0
        );
    }
}
