//! Query strings: `Query::parse`, then every decoder the server runs on them:
//! `ListOptions::from_query` (list and watch), `request_timeout` / `parse_duration`,
//! `dryRun`, `fieldValidation`, and the selectors they carry. Every refusal is a 4xx.
#![no_main]

use krust_apiserver::options::ListOptions;
use krust_apiserver::request::{parse_duration, request_timeout, Query};
use krust_machinery::codec::FieldValidation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let q = Query::parse(Some(s));
    for watch in [false, true] {
        match ListOptions::from_query(&q, watch) {
            Ok(opts) => {
                let pods = krust_fuzz::registry()
                    .lookup("", "v1", "pods")
                    .expect("pods are served");
                if let Err(e) = krust_apiserver::glue::ObjectFilter::new(
                    pods,
                    opts.label_selector.as_deref(),
                    opts.field_selector.as_deref(),
                ) {
                    krust_fuzz::assert_client_error(&e, "selectors");
                }
                if let Some(token) = opts.continue_token.as_deref() {
                    if let Err(e) = krust_apiserver::rest::decode_continue(token) {
                        krust_fuzz::assert_client_error(&e, "continue");
                    }
                }
            }
            Err(e) => krust_fuzz::assert_client_error(&e, "ListOptions"),
        }
    }
    match request_timeout(&q) {
        // The deadline must be usable: the server adds it to the current instant.
        Ok(Some(d)) => {
            let _ = std::time::Instant::now().checked_add(d);
        }
        Ok(None) => {}
        Err(e) => krust_fuzz::assert_client_error(&e, "timeout"),
    }
    if let Err(e) = q.dry_run() {
        krust_fuzz::assert_client_error(&e, "dryRun");
    }
    let _ = FieldValidation::parse(q.get("fieldValidation"));
    for k in [
        "gracePeriodSeconds",
        "limit",
        "timeoutSeconds",
        "sinceSeconds",
        "tailLines",
    ] {
        if let Err(e) = q.int(k) {
            krust_fuzz::assert_client_error(&e, k);
        }
    }
    let _ = (
        q.flag("force"),
        q.opt_flag("sendInitialEvents"),
        q.all("command").count(),
    );
    // The raw string as a duration too, so the grammar is explored without `timeout=`.
    let _ = parse_duration(s);
});
