//! Measures the SQLite store's group-commit throughput: C concurrent tasks creating N keys of
//! about 1 KiB, next to the disk's fsyncs per second.
//!
//! `cargo run --release -p krust-store --example sqlite_throughput -- [N] [C] [DIR]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use krust_store::{measure_fsyncs_per_second, SqliteStore, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args.get(1).map_or(Ok(20_000), |s| s.parse())?;
    let tasks: usize = args.get(2).map_or(Ok(16), |s| s.parse())?;
    let base = match args.get(3) {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir_in(".")?,
    };
    let fsyncs = measure_fsyncs_per_second(base.path(), Duration::from_secs(2));
    println!("fsyncs/s (4 KiB write + fsync): {fsyncs:.0}");

    let started = Instant::now();
    let store = Arc::new(SqliteStore::open(&base.path().join("store"))?);
    println!("open: {:?}", started.elapsed());
    let value = Bytes::from(vec![b'x'; 1024]);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                let mut i = t;
                while i < total {
                    let key = format!("/registry/pods/ns{}/pod-{i:07}", i % 20);
                    store.create(&key, value.clone()).await?;
                    i += tasks;
                }
                Ok::<_, krust_store::StoreError>(())
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    let took = started.elapsed();
    println!(
        "{total} creates of 1 KiB from {tasks} tasks in {took:?}: {:.0} creates/s",
        total as f64 / took.as_secs_f64()
    );
    let stats = store.stats();
    println!(
        "{} commits, {:.1} writes per commit",
        stats.commits,
        stats.requests as f64 / stats.commits.max(1) as f64
    );
    drop(store);
    let started = Instant::now();
    let store = SqliteStore::open(&base.path().join("store"))?;
    println!("reopen with {} keys: {:?}", store.len(), started.elapsed());
    Ok(())
}
