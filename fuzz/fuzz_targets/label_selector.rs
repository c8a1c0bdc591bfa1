//! `labelSelector=`: `Selector::parse` (what `glue::ObjectFilter::new` calls for every list,
//! watch and deletecollection). A parsed selector prints a form that parses to the same
//! selector; JSON input also goes through `Selector::from_label_selector` (the
//! metav1.LabelSelector of Deployments, Services, PDBs, ...).
#![no_main]

use krust_machinery::selector::Selector;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let obj =
        json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "1", "x.io/y": ""}}});
    if let Ok(sel) = Selector::parse(s) {
        let printed = sel.to_string();
        let again = Selector::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(again, sel, "{s:?} printed as {printed:?}");
        assert_eq!(again.matches_object(&obj), sel.matches_object(&obj));
    }
    let pods = krust_fuzz::registry()
        .lookup("", "v1", "pods")
        .expect("pods are served");
    match krust_apiserver::glue::ObjectFilter::new(pods, Some(s), None) {
        Ok(f) => {
            let _ = f.matches(&obj);
        }
        Err(e) => krust_fuzz::assert_client_error(&e, "labelSelector"),
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(s) {
        if let Ok(sel) = Selector::from_label_selector(&v) {
            let _ = sel.matches_object(&obj);
            let _ = sel.to_string();
        }
        let _ = krust_machinery::selector::format_label_selector(&v);
        let _ = krust_machinery::selector::label_selector_matches(&v, &obj["metadata"]["labels"]);
    }
});
