//! Every flag's value parser, through the real command line: the first byte picks the flag,
//! the rest is its value (as `--flag=value`). Also Go's duration and boolean syntax directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_webhook::cli;
use pod_identity_webhook::core::go_syntax;

const FLAGS: &[&str] = &[
    "annotation-prefix",
    "token-audience",
    "token-mount-path",
    "token-expiration",
    "aws-default-region",
    "sts-regional-endpoint",
    "watch-container-credentials-config",
    "container-credentials-audience",
    "container-credentials-token-mount-path",
    "container-credentials-token-volume-name",
    "container-credentials-token-path",
    "container-credentials-full-uri",
    "port",
    "metrics-port",
    "bind-address",
    "tls-cert",
    "tls-key",
    "tls-min-version",
    "tls-cipher-suites",
    "kubeconfig",
    "kube-api",
    "namespace",
    "service-name",
    "tls-secret",
    "in-cluster",
    "webhook-config-name",
    "watch-config-map",
    "service-account-lookup-grace-period",
    "resync-period",
    "enable-debugging-handlers",
    "compose-role-arn",
    "log-format",
    "shutdown-timeout",
    "shutdown-delay",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let flag = FLAGS[pick as usize % FLAGS.len()];
    let _ = cli::try_parse([
        "pod-identity-webhook".to_string(),
        format!("--{flag}={value}"),
    ]);
    if let Ok(duration) = go_syntax::parse_duration(value) {
        assert!(duration.as_nanos() <= i64::MAX as u128, "{value:?}");
    }
    let _ = go_syntax::parse_bool(value);
});
