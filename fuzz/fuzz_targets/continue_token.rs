//! `continue=` tokens: `rest::decode_continue` (base64 of upstream's JSON token). What a
//! token decodes to encodes (`encode_continue`) to a token that decodes the same.
#![no_main]

use krust_apiserver::rest::{decode_continue, encode_continue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match decode_continue(s) {
        Ok((key, rv)) => {
            let again = encode_continue(&key, rv);
            let back = decode_continue(&again).expect("encode_continue writes valid tokens");
            assert_eq!(back, (key, rv));
        }
        Err(e) => krust_fuzz::assert_client_error(&e, "continue"),
    }
    // The decoded JSON text itself, as a token, so the fuzzer need not learn base64.
    let token = {
        use base64_free::encode;
        encode(data)
    };
    if let Err(e) = decode_continue(&token) {
        krust_fuzz::assert_client_error(&e, "continue");
    }
});

/// URL-safe base64 with padding, as `encode_continue` writes it (kept here so the fuzz
/// crate needs no base64 dependency of its own).
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
