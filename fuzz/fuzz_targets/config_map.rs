//! The ConfigMap mapping parser: any text is a mapping with skipped entries, or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_webhook::core::identity::ConfigMapMapping;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = ConfigMapMapping::parse(text) {
        for line in &parsed.skipped {
            assert!(!line.contains('\n') || text.contains('\n'), "{line}");
        }
    }
});
