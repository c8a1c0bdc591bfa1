//! A create/update body sent as `application/yaml`: `server::decode_body`, then what the server does
//! with the object (typed round trip, field validation, strategy, defaults, validation).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match krust_apiserver::server::decode_body("application/yaml", data) {
        Ok(parsed) => {
            let info = krust_fuzz::kind_of(&parsed.value);
            krust_fuzz::create_pipeline(info, parsed.value, &parsed.duplicates);
        }
        Err(e) => krust_fuzz::assert_client_error(&e, "decode_body"),
    }
});
