//! `fieldSelector=`: `FieldSelector::parse` and `parse_for` on every served kind (what
//! `glue::ObjectFilter::new` calls), then matching. A parsed selector prints a form that
//! parses to the same terms.
#![no_main]

use krust_machinery::selector::FieldSelector;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let obj = json!({
        "metadata": {"name": "a", "namespace": "default"},
        "spec": {"nodeName": "n1", "hostNetwork": true},
        "status": {"phase": "Running", "podIP": "10.0.0.1"},
        "type": "Opaque",
    });
    if let Ok(sel) = FieldSelector::parse(s) {
        let printed = sel.to_string();
        let again = FieldSelector::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which fails: {e}"));
        let mut want = sel.terms().to_vec();
        let mut got = again.terms().to_vec();
        want.sort_by(|a, b| (&a.field, &a.value, a.negated).cmp(&(&b.field, &b.value, b.negated)));
        got.sort_by(|a, b| (&a.field, &a.value, a.negated).cmp(&(&b.field, &b.value, b.negated)));
        assert_eq!(got, want, "{s:?} printed as {printed:?}");
    }
    for info in krust_fuzz::registry().resources() {
        match krust_apiserver::glue::ObjectFilter::new(info, None, Some(s)) {
            Ok(f) => {
                let _ = f.matches(&obj);
            }
            Err(e) => krust_fuzz::assert_client_error(&e, "fieldSelector"),
        }
    }
});
