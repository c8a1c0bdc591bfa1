//! Server-side apply (`application/apply-patch+yaml`): input is `<live object JSON>\0<body>`
//! (an empty live part means the object does not exist yet). `patch::decode_apply_body`,
//! the typed round trip, then `patch::apply` with managedFields, as the server's apply path.
#![no_main]

use krust_machinery::patch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (doc, body) = krust_fuzz::split(data);
    let live = krust_fuzz::stored_object(doc);
    let applied = match patch::decode_apply_body(body) {
        Ok(v) => v,
        Err(e) => {
            assert!(e.code() < 500, "decode_apply_body: {e}");
            return;
        }
    };
    let info = match &live {
        Some((info, _)) => *info,
        None => krust_fuzz::kind_of(&applied),
    };
    let Ok(applied) = info.ops.roundtrip(applied) else {
        return;
    };
    let force = body.len() % 2 == 0;
    let now = "2024-01-01T00:00:00Z";
    let old = live.as_ref().map(|(_, v)| v);
    match patch::apply(info, old, &applied, "fuzz", force, now) {
        Ok(new) => match old {
            Some(old) => krust_fuzz::update_pipeline(info, old, new),
            None => {
                krust_fuzz::create_pipeline(info, new, &[]);
            }
        },
        Err(e) => krust_fuzz::assert_client_error(&e.to_api_error(info, "fuzz"), "apply"),
    }
});
