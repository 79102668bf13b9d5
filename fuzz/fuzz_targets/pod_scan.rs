//! The request path's pod scanner against serde: any text the scanner accepts as a pod, serde
//! accepts too and reads into the same tree; the scanner never panics or recurses unboundedly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_webhook::core::engine::check_scanner_against_serde;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problem) = check_scanner_against_serde(text) {
        panic!("{problem}");
    }
});
