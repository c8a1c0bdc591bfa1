//! A body sent as `application/vnd.kubernetes.protobuf`: `server::decode_body` (which calls
//! `proto::decode`), then the create path; what decodes must encode back to protobuf and
//! decode to the same JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match krust_apiserver::server::decode_body(krust_machinery::proto::CONTENT_TYPE, data) {
        Ok(parsed) => {
            if let Ok(again) = krust_machinery::proto::encode(&parsed.value) {
                let back = krust_machinery::proto::decode(&again)
                    .expect("what proto::encode writes, proto::decode reads");
                if let Some(d) = krust_fuzz::first_difference(&parsed.value, &back) {
                    panic!("protobuf round trip changed the object at {d}");
                }
            }
            let info = krust_fuzz::kind_of(&parsed.value);
            krust_fuzz::create_pipeline(info, parsed.value, &parsed.duplicates);
        }
        Err(e) => krust_fuzz::assert_client_error(&e, "decode_body"),
    }
});
