//! The shared suite on `SqliteStore`, plus what only a durable store must do: reopen with
//! every key and the revision, refuse a second owner, keep acknowledged writes across
//! `kill -9`, and open a large store fast.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use krust_store::suite::{self, Harness};
use krust_store::{SqliteStore, Store, StoreError};

async fn make() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    Harness::with_guard(store, dir)
}

krust_store::store_suite!(make());

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn reopen_keeps_keys_and_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, rev) = {
        let store = SqliteStore::open(dir.path()).expect("open");
        for i in 0..50 {
            store
                .create(&format!("/r/k{i:02}"), bytes(&format!("v{i}")))
                .await
                .expect("create");
        }
        let k = store.get("/r/k07").await.expect("get").expect("k07");
        store
            .update("/r/k07", bytes("updated"), k.mod_revision)
            .await
            .expect("update");
        for i in 40..50 {
            store
                .delete(&format!("/r/k{i:02}"), None)
                .await
                .expect("delete");
        }
        let rev = store.current_revision().await.expect("revision");
        assert_eq!(rev, 61);
        (store.list("/r/", None, 0).await.expect("list").items, rev)
    };
    let store = SqliteStore::open(dir.path()).expect("reopen");
    assert_eq!(store.current_revision().await.expect("revision"), rev);
    let now = store.list("/r/", None, 0).await.expect("list");
    assert_eq!(now.items, kept);
    assert_eq!(now.items.len(), 40);
    assert_eq!(now.revision, rev);
    let k07 = store.get("/r/k07").await.expect("get").expect("k07");
    assert_eq!(k07.value, bytes("updated"));
    assert!(k07.create_revision < k07.mod_revision);

    // History did not survive: older watches are told to relist; new ones work.
    suite::expect_compacted(&store, "/r/", rev - 1).await;
    let mut w = store
        .watch("/r/", rev)
        .await
        .expect("watch from the open revision");
    let kv = store.create("/r/new", bytes("x")).await.expect("create");
    assert_eq!(
        kv.mod_revision,
        rev + 1,
        "the revision never goes backwards"
    );
    assert_eq!(suite::next_event(&mut w).await.expect("event").kv, kv);

    // A delete alone advances the revision durably too.
    store.delete("/r/new", None).await.expect("delete");
    drop(w);
    drop(store);
    let store = SqliteStore::open(dir.path()).expect("reopen");
    assert_eq!(store.current_revision().await.expect("revision"), rev + 2);
}

#[tokio::test]
async fn a_directory_has_one_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = SqliteStore::open(dir.path()).expect("open");
    first.create("/o/a", bytes("a")).await.expect("create");
    match SqliteStore::open(dir.path()) {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("in use"), "{m}"),
        Err(e) => panic!("second open: expected Unavailable, got {e}"),
        Ok(_) => panic!("a second store opened the same directory"),
    }
    drop(first);
    let second = SqliteStore::open(dir.path()).expect("open after the first closed");
    assert!(second.get("/o/a").await.expect("get").is_some());
}

const CHILD_ENV: &str = "KRUST_STORE_DURABILITY_CHILD_DIR";
const HOLD_ENV: &str = "KRUST_STORE_HOLD_CHILD_DIR";

/// Not a test by itself: the child of `another_process_cannot_open_the_same_directory`,
/// which opens the store, says so, and waits to be killed (at most 60 s).
#[test]
fn hold_child() {
    let Some(dir) = std::env::var_os(HOLD_ENV) else {
        return;
    };
    let _store = SqliteStore::open(Path::new(&dir)).expect("open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "OPEN").expect("stdout");
    out.flush().expect("stdout");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn another_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "hold_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(HOLD_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                // libtest may have printed "test hold_child ... " on the same line.
                Ok(l) if l.ends_with("OPEN") => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let opened = rx.recv_timeout(Duration::from_secs(30));
    let second = SqliteStore::open(dir.path());
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    opened.expect("the child did not open the store");
    match second {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("in use"), "{m}"),
        Err(e) => panic!("open while another process holds it: expected Unavailable, got {e}"),
        Ok(_) => panic!("two processes opened the same directory"),
    }
    // The lock dies with its process.
    SqliteStore::open(dir.path()).expect("open after the holder was killed");
}

/// Not a test by itself: the body of the child process of
/// `acknowledged_writes_survive_kill_9` (does nothing without its environment variable).
#[test]
fn durability_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = Arc::new(SqliteStore::open(Path::new(&dir)).expect("open"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let value = Bytes::from(vec![b'x'; 1000]);
        let tasks = (0..16).map(|t| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if Instant::now() > deadline {
                        break;
                    }
                    let key = format!("/d/t{t:02}/{i:06}");
                    let kv = store.create(&key, value.clone()).await.expect("create");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {key} {}", kv.mod_revision).expect("stdout");
                    out.flush().expect("stdout");
                }
            })
        });
        for t in futures::future::join_all(tasks).await {
            t.expect("task");
        }
    });
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "durability_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // Only complete lines count: the kill may cut the last one.
            let Some(l) = line.strip_suffix('\n') else {
                break;
            };
            // libtest may have printed "test durability_child ... " before the first one.
            let Some(at) = l.find("ACK ") else { continue };
            let mut parts = l[at..].split(' ');
            if let (Some("ACK"), Some(key), Some(rev)) = (parts.next(), parts.next(), parts.next())
            {
                let rev: i64 = rev.parse().expect("revision");
                acks.push((key.to_owned(), rev));
                let _ = tx.send(acks.len());
            }
        }
        acks
    });
    // Let it write for a while, then kill it in the middle of the stream.
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(n) if n >= 3000 => break,
            Ok(_) => {}
            Err(e) => panic!("child stopped acknowledging writes: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "child too slow"
        );
    }
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    let acks = reader.join().expect("reader");
    eprintln!("child acknowledged {} writes before kill -9", acks.len());

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::open(dir.path()).expect("reopen after kill -9");
        let max_ack = acks.iter().map(|a| a.1).max().expect("acks");
        let rev = store.current_revision().await.expect("revision");
        assert!(
            rev >= max_ack,
            "revision {rev} went below acknowledged {max_ack}"
        );
        for (key, rev) in &acks {
            let kv = store
                .get(key)
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("acknowledged key {key} lost"));
            assert_eq!(kv.mod_revision, *rev, "{key}");
        }
        // Nothing beyond the revision, and the store keeps working.
        let all = store.list("/d/", None, 0).await.expect("list");
        assert!(all.items.iter().all(|kv| kv.mod_revision <= rev));
        assert_eq!(all.items.len() as i64, rev, "one create per revision");
        store
            .create("/d/after", bytes("x"))
            .await
            .expect("write after reopen");
    });
}

#[tokio::test]
async fn opening_100k_keys_is_fast() {
    const N: i64 = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(dir.path()).expect("create the schema"));
    {
        // Fill the database directly: going through the store would take much longer.
        let mut conn = rusqlite::Connection::open(dir.path().join(krust_store::sqlite::DB_FILE))
            .expect("open db");
        let tx = conn.transaction().expect("tx");
        {
            let mut ins = tx
                .prepare(
                    "INSERT INTO kv (key, value, create_revision, mod_revision) VALUES (?1, ?2, ?3, ?3)",
                )
                .expect("prepare");
            let value = vec![b'v'; 1024];
            for i in 1..=N {
                ins.execute(rusqlite::params![
                    format!("/registry/pods/ns{}/pod-{i:06}", i % 50),
                    value,
                    i
                ])
                .expect("insert");
            }
            tx.execute("UPDATE meta SET revision = ?1", [N])
                .expect("meta");
        }
        tx.commit().expect("commit");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .expect("checkpoint");
    }
    let started = Instant::now();
    let store = SqliteStore::open(dir.path()).expect("open");
    let took = started.elapsed();
    eprintln!("opened {N} keys of 1 KiB in {took:?}");
    assert_eq!(store.len() as i64, N);
    assert_eq!(store.current_revision().await.expect("revision"), N);
    let page = store
        .list("/registry/pods/ns7/", None, 10)
        .await
        .expect("list");
    assert_eq!(page.items.len(), 10);
    assert!(page.more());
    assert!(took < Duration::from_secs(2), "opening took {took:?}");
}
