//! A strategic merge patch (`application/strategic-merge-patch+json`): input is `<live object JSON>\0<patch body>`. The
//! live object goes through the typed form (as stored objects have), then
//! `glue::patch` (the server's PATCH path), then update validation of the result.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    krust_fuzz::patch_target("application/strategic-merge-patch+json", data);
});
