//! A watch request: `<path>?<query>`. `request::parse_path`, `ListOptions::from_query`
//! (watch on), then `watch::start` on an empty cache, which parses `resourceVersion`, the
//! selectors, and resumes from history. Every refusal is a 4xx; the stream ends when the
//! receiver is dropped.
#![no_main]

use std::sync::OnceLock;

use krust_apiserver::cache::Cache;
use krust_apiserver::options::ListOptions;
use krust_apiserver::request::{parse_path, Query, Target};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = s.split_once('?').unwrap_or((s, ""));
    let reg = krust_fuzz::registry();
    let rp = match parse_path(reg, path) {
        Ok(Target::Resource(rp)) => rp,
        Ok(_) => return,
        Err(e) => return krust_fuzz::assert_client_error(&e, "path"),
    };
    let q = Query::parse(Some(query));
    let opts = match ListOptions::from_query(&q, true) {
        Ok(o) => o,
        Err(e) => return krust_fuzz::assert_client_error(&e, "ListOptions"),
    };
    let cache = Cache::new();
    runtime().block_on(async {
        match krust_apiserver::watch::start(cache, &rp, &opts) {
            Ok(rx) => drop(rx),
            Err(e) => krust_fuzz::assert_client_error(&e, "watch"),
        }
        // Lets the watcher task see its receiver gone and end.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    });
});
