//! The container-credentials file parser: any bytes are a list of identities or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_webhook::core::identity::ContainerCredentialsConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = ContainerCredentialsConfig::parse(data) {
        // Parsing the same bytes twice gives the same list.
        assert_eq!(ContainerCredentialsConfig::parse(data).unwrap(), config);
    }
});
