//! The manifests reader of `mutate`: YAML or JSON streams, `List` documents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_webhook::commands::manifests::parse_documents;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(documents) = parse_documents(text) {
        for document in &documents {
            assert!(document.index >= 1);
        }
    }
});
