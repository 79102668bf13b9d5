//! The command line. Flag names, defaults and value syntax follow the reference webhook (Go's
//! pflag and klog), so its deployment arguments work unchanged.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::certs::CertsConfig;
use crate::core::go_syntax;
use crate::ops::logging::LogFormat;
use crate::server::tls::{TlsSettings, TlsVersion};
pub(crate) use go_flags::{go_style_args, KlogFlags};

mod go_flags;
mod irsa_args;
mod limit_args;
use crate::core::settings::{
    self, clamp_expiration, ContainerCredentialsSettings, MutationSettings,
};
pub(crate) use irsa_args::{ClusterAccess, DoctorArgs, OidcArgs, ReportFormat, TrustPolicyArgs};
pub(crate) use limit_args::LimitArgs;

#[derive(Debug, Parser)]
#[command(
    name = "pod-identity-webhook",
    version,
    about = "Mutating admission webhook that gives pods AWS credentials (IRSA and EKS Pod Identity).\n\
             Without a subcommand it runs the webhook server.",
    args_conflicts_with_subcommands = true,
    // Go's flag package lets a later occurrence of a flag win; manifests rely on it (a
    // chart's arguments followed by a user's extra ones).
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at startup: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server (the default when no subcommand is given).
    #[command(args_override_self = true)]
    Serve(ServeArgs),
    /// Show offline what the webhook would do to a pod.
    Mutate(MutateArgs),
    /// Write the OIDC discovery document and JWKS to publish at the issuer URL (IRSA on a
    /// self-managed cluster), and check them against the cluster.
    Oidc(OidcArgs),
    /// Print the IAM role trust policy for ServiceAccounts.
    TrustPolicy(TrustPolicyArgs),
    /// Check why a ServiceAccount's pods can or cannot assume their IAM role.
    Doctor(DoctorArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MutationFlags {
    /// Prefix of the ServiceAccount and pod annotations read.
    #[arg(long, default_value = settings::DEFAULT_ANNOTATION_PREFIX, value_parser = non_empty)]
    pub annotation_prefix: String,
    /// Default token audience; a ServiceAccount's `audience` annotation overrides it.
    #[arg(long, default_value = settings::DEFAULT_TOKEN_AUDIENCE, value_parser = non_empty)]
    pub token_audience: String,
    /// Where the IRSA token volume is mounted in containers.
    #[arg(long, default_value = settings::DEFAULT_TOKEN_MOUNT_PATH, value_parser = absolute_path)]
    pub token_mount_path: String,
    /// Default token lifetime in seconds; below 600 becomes 600.
    #[arg(long, default_value_t = settings::DEFAULT_TOKEN_EXPIRATION, value_parser = seconds)]
    pub token_expiration: i64,
    /// When set, AWS_DEFAULT_REGION and AWS_REGION are set to it in mutated containers.
    #[arg(long, default_value = "")]
    pub aws_default_region: String,
    /// Inject AWS_STS_REGIONAL_ENDPOINTS=regional (Go boolean).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub sts_regional_endpoint: bool,
    /// Set AWS_ROLE_SESSION_NAME to the pod's name (IRSA), by default for ServiceAccounts
    /// without the `role-session-name-from-pod` annotation (Go boolean).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub role_session_name_from_pod: bool,
    /// Inject the region (the ServiceAccount's `region` annotation, else --aws-default-region)
    /// also into pods whose ServiceAccount has no role (Go boolean).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub inject_region_without_role: bool,
    /// JSON file listing the ServiceAccounts that use EKS Pod Identity (watched for changes).
    #[arg(long)]
    pub watch_container_credentials_config: Option<PathBuf>,
    /// Token audience in container-credentials mode.
    #[arg(long, default_value = settings::DEFAULT_CC_AUDIENCE, value_parser = non_empty)]
    pub container_credentials_audience: String,
    /// Token mount path in container-credentials mode.
    #[arg(long, default_value = settings::DEFAULT_CC_MOUNT_PATH, value_parser = absolute_path)]
    pub container_credentials_token_mount_path: String,
    /// Token volume name in container-credentials mode.
    #[arg(long, default_value = settings::DEFAULT_CC_VOLUME_NAME, value_parser = non_empty)]
    pub container_credentials_token_volume_name: String,
    /// Token file name inside the volume in container-credentials mode.
    #[arg(long, default_value = settings::DEFAULT_CC_TOKEN_PATH, value_parser = non_empty)]
    pub container_credentials_token_path: String,
    /// Value of AWS_CONTAINER_CREDENTIALS_FULL_URI in container-credentials mode.
    #[arg(long, default_value = settings::DEFAULT_CC_FULL_URI, value_parser = non_empty)]
    pub container_credentials_full_uri: String,
}

impl MutationFlags {
    pub fn settings(&self) -> MutationSettings {
        let mut settings = MutationSettings::with_prefix(&self.annotation_prefix);
        settings.token_audience = self.token_audience.clone();
        settings.token_mount_path = self.token_mount_path.clone();
        settings.token_expiration = clamp_expiration(self.token_expiration);
        settings.aws_default_region =
            Some(self.aws_default_region.clone()).filter(|region| !region.is_empty());
        settings.sts_regional_endpoint = self.sts_regional_endpoint;
        settings.role_session_name_from_pod = self.role_session_name_from_pod;
        settings.inject_region_without_role = self.inject_region_without_role;
        settings.container_credentials = ContainerCredentialsSettings {
            audience: self.container_credentials_audience.clone(),
            mount_path: self.container_credentials_token_mount_path.clone(),
            volume_name: self.container_credentials_token_volume_name.clone(),
            token_path: self.container_credentials_token_path.clone(),
            full_uri: self.container_credentials_full_uri.clone(),
        };
        settings
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The RFC 6902 patch as a JSON array.
    Patch,
    /// The patched pod as JSON.
    Pod,
    /// The patched pod as YAML.
    Yaml,
}

#[derive(Debug, Clone, Args)]
pub struct MutateArgs {
    /// The pod manifest (YAML or JSON); `-` reads standard input.
    #[arg(long)]
    pub pod: PathBuf,
    /// ServiceAccount manifests (YAML or JSON, several documents allowed); repeatable.
    #[arg(long = "service-account")]
    pub service_accounts: Vec<PathBuf>,
    /// The `pod-identity-webhook` ConfigMap manifest holding the mapping.
    #[arg(long)]
    pub config_map: Option<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value = "patch")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub mutation: MutationFlags,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTPS port of the admission endpoint.
    #[arg(long, default_value_t = 443, value_parser = port)]
    pub port: u16,
    /// Plain-HTTP port for /metrics, /healthz, /readyz and debugging handlers.
    #[arg(long, default_value_t = 9999, value_parser = port)]
    pub metrics_port: u16,
    /// Address both listeners bind to [default: every IPv6 and IPv4 address, or every IPv4
    /// address where the machine has no IPv6].
    #[arg(long)]
    pub bind_address: Option<std::net::IpAddr>,
    /// Serving certificate (PEM), reloaded when the file changes.
    #[arg(long, default_value = "/etc/webhook/certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// Serving key (PEM), reloaded when the file changes.
    #[arg(long, default_value = "/etc/webhook/certs/tls.key")]
    pub tls_key: PathBuf,
    /// Minimum TLS version: 1.2, 1.3, VersionTLS12 or VersionTLS13 (1.0 and 1.1 are served as 1.2).
    #[arg(long, default_value = "1.2", value_parser = tls_version)]
    pub tls_min_version: TlsVersion,
    /// Comma-separated cipher suites (IANA or Go names) for TLS 1.2; empty means rustls' defaults.
    #[arg(long, value_delimiter = ',')]
    pub tls_cipher_suites: Vec<String>,
    /// Path to a kubeconfig; in-cluster configuration or $KUBECONFIG when empty.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// URL of the API server, overriding the kubeconfig's.
    #[arg(long)]
    pub kube_api: Option<String>,
    /// Namespace of the webhook, its TLS Secret and its ConfigMap.
    #[arg(long, default_value = "eks", value_parser = non_empty)]
    pub namespace: String,
    /// Name of the Service in front of the webhook (built-in certificate mode).
    #[arg(long, default_value = "pod-identity-webhook", value_parser = non_empty)]
    pub service_name: String,
    /// Secret holding the serving certificate (built-in certificate mode).
    #[arg(long, default_value = "pod-identity-webhook", value_parser = non_empty)]
    pub tls_secret: String,
    /// Built-in certificate mode: create and rotate the serving certificate in --tls-secret
    /// and publish its CA in --webhook-config-name (Go boolean).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub in_cluster: bool,
    /// MutatingWebhookConfiguration whose caBundle the built-in certificate mode maintains.
    #[arg(long, default_value = "pod-identity-webhook", value_parser = non_empty)]
    pub webhook_config_name: String,
    /// Watch ConfigMap `pod-identity-webhook` in --namespace for the role mapping (Go boolean).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub watch_config_map: bool,
    /// How long a pod's admission may wait for a ServiceAccount missing from the cache.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub service_account_lookup_grace_period: Duration,
    /// Accepted for compatibility (default 1m); watches here do not need periodic resyncs.
    #[arg(long, value_parser = duration)]
    pub resync_period: Option<Duration>,
    /// Serve /debug/alpha/cache on the metrics port (Go boolean).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub enable_debugging_handlers: bool,
    /// Accepted for compatibility; composing role ARNs from instance metadata is not supported.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub compose_role_arn: bool,
    /// klog verbosity: 0-1 info, 2-3 adds the webhook's debug lines, 4 debug of every library,
    /// 5+ trace.
    #[arg(short = 'v', long = "v", default_value_t = 0, value_parser = verbosity)]
    pub verbosity: u8,
    /// Log line format.
    #[arg(long, default_value = "text", value_parser = log_format())]
    pub log_format: LogFormat,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: Duration,
    /// How long the listener keeps accepting after SIGTERM, so endpoints can drop this pod.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub shutdown_delay: Duration,
    #[command(flatten)]
    pub mutation: MutationFlags,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub klog: KlogFlags,
}

impl ServeArgs {
    /// Checks that cross flags and that clap cannot express; one line naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.compose_role_arn {
            return Err("--compose-role-arn=true is not supported: it needs EC2 instance metadata; annotate ServiceAccounts with full role ARNs".into());
        }
        if self.port == self.metrics_port {
            return Err(format!(
                "--port and --metrics-port are both {}; they must differ",
                self.port
            ));
        }
        self.limits.validate()
    }

    /// `--tls-min-version` and `--tls-cipher-suites` as the TLS server's settings.
    pub fn tls_settings(&self) -> TlsSettings {
        TlsSettings {
            min_version: self.tls_min_version,
            cipher_suites: self.tls_cipher_suites.clone(),
        }
    }

    /// The built-in certificate mode's settings from `--namespace`, `--service-name`,
    /// `--tls-secret` and `--webhook-config-name`, with the default lifetimes.
    pub fn certs_config(&self) -> CertsConfig {
        CertsConfig::new(
            &self.namespace,
            &self.service_name,
            &self.tls_secret,
            &self.webhook_config_name,
        )
    }

    /// The flags given that are accepted for compatibility but change nothing here, for one
    /// line at startup.
    pub fn without_effect(&self) -> Vec<String> {
        let mut names = self.klog.without_effect();
        if self.resync_period.is_some() {
            names.push("--resync-period".into());
        }
        names
    }
}

impl Cli {
    /// The command to run; no subcommand means `serve`.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

/// Go-style boolean flags (`num_args = 0..=1, require_equals`): bare means true and
/// `--flag=false` works, while `--flag false` leaves `false` as a stray argument, as pflag does.
fn go_bool(value: &str) -> Result<bool, String> {
    go_syntax::parse_bool(value)
        .ok_or_else(|| "expected a boolean: true, false, 1, 0, t, f, TRUE, FALSE".to_string())
}

fn duration(value: &str) -> Result<Duration, String> {
    go_syntax::parse_duration(value)
}

fn port(value: &str) -> Result<u16, String> {
    value
        .parse()
        .map_err(|_| "expected a port number from 0 to 65535".to_string())
}

fn seconds(value: &str) -> Result<i64, String> {
    value
        .parse()
        .map_err(|_| "expected a whole number of seconds".to_string())
}

fn verbosity(value: &str) -> Result<u8, String> {
    value
        .parse()
        .map_err(|_| "expected a verbosity level from 0 to 255".to_string())
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.is_empty() {
        Err("expected a non-empty value".into())
    } else {
        Ok(value.to_string())
    }
}

fn absolute_path(value: &str) -> Result<String, String> {
    if value.starts_with('/') {
        Ok(value.to_string())
    } else {
        Err("expected an absolute path starting with /".into())
    }
}

/// `--log-format`: `text` or `json`, listed in `--help` and in the error for anything else.
fn log_format() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["text", "json"]).map(|value| match value.as_str() {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    })
}

fn tls_version(value: &str) -> Result<TlsVersion, String> {
    match value {
        "1.2" | "VersionTLS12" => Ok(TlsVersion::Tls12),
        "1.3" | "VersionTLS13" => Ok(TlsVersion::Tls13),
        "1.0" | "VersionTLS10" => Ok(TlsVersion::Tls10),
        "1.1" | "VersionTLS11" => Ok(TlsVersion::Tls11),
        _ => Err("expected 1.2, 1.3, VersionTLS12 or VersionTLS13 (1.0, 1.1, VersionTLS10 and VersionTLS11 are accepted and served as 1.2)".into()),
    }
}

/// Parses the command line with Go's flag syntax: `-name` is taken as `--name` for long flags
/// (see [`go_style_args`]).
pub fn try_parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    use clap::CommandFactory;
    Cli::try_parse_from(go_style_args(&Cli::command(), args))
}

/// Parses the command line. Help and version print as usual; any error becomes one line on
/// standard error naming the flag, the value and what is expected, with exit code 2.
pub fn parse_or_exit<I, T>(args: I) -> Cli
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match try_parse(args) {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                err.exit();
            }
            eprintln!("{}", one_line(&err));
            std::process::exit(2);
        }
    }
}

/// clap's message on one line: the problem and what clap adds that helps fix it (the missing
/// arguments, `[possible values: ...]`, `tip: a similar argument exists: ...`), without the
/// usage block and the pointer to `--help`.
pub fn one_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let mut line = String::new();
    // After a line ending in ':' come its items (the missing arguments), joined by commas.
    let mut listing = false;
    for part in rendered.lines().map(str::trim) {
        if part.starts_with("Usage:") || part.starts_with("For more information") {
            break;
        }
        if part.is_empty() {
            continue;
        }
        let is_tip = part.starts_with("tip:");
        if !line.is_empty() {
            let separator = if line.ends_with(':') || part.starts_with('[') {
                " "
            } else if listing && !is_tip {
                ", "
            } else {
                "; "
            };
            line.push_str(separator);
        }
        listing = (listing && !is_tip) || part.ends_with(':');
        line.push_str(part);
    }
    if line.is_empty() {
        "error: invalid command line (try --help)".to_string()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pod-identity-webhook").chain(args.iter().copied()))
    }

    #[test]
    fn no_subcommand_means_serve_with_reference_defaults() {
        let Command::Serve(serve) = parse(&[]).unwrap().into_command() else {
            panic!("expected serve");
        };
        assert_eq!(serve.port, 443);
        assert_eq!(serve.metrics_port, 9999);
        assert_eq!(serve.namespace, "eks");
        assert!(!serve.in_cluster);
        assert_eq!(
            serve.service_account_lookup_grace_period,
            Duration::from_secs(1)
        );
        let settings = serve.mutation.settings();
        assert_eq!(settings, MutationSettings::default());
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value_as_in_go() {
        for prefix in [&[][..], &["serve"][..]] {
            let args: Vec<&str> = prefix
                .iter()
                .copied()
                .chain(["--shutdown-delay=2s", "--port=8443", "--shutdown-delay=0s"])
                .collect();
            let Command::Serve(serve) = parse(&args).unwrap().into_command() else {
                panic!("expected serve");
            };
            assert_eq!(serve.shutdown_delay, Duration::ZERO, "{prefix:?}");
            assert_eq!(serve.port, 8443);
        }
    }

    #[test]
    fn go_style_flags_accept_both_value_forms_and_bare_booleans() {
        let cli = parse(&[
            "--port=8443",
            "--metrics-port",
            "9998",
            "--sts-regional-endpoint",
            "--in-cluster=false",
            "--service-account-lookup-grace-period=1m30s",
            "--v=4",
            "--token-expiration",
            "100",
        ])
        .unwrap();
        let Command::Serve(serve) = cli.into_command() else {
            panic!()
        };
        assert_eq!(serve.port, 8443);
        assert_eq!(serve.metrics_port, 9998);
        assert!(serve.mutation.sts_regional_endpoint);
        assert!(!serve.in_cluster);
        assert_eq!(
            serve.service_account_lookup_grace_period,
            Duration::from_secs(90)
        );
        assert_eq!(serve.verbosity, 4);
        assert_eq!(serve.mutation.settings().token_expiration, 600);
        let cli = parse(&["-v", "2", "--sts-regional-endpoint=false"]).unwrap();
        assert_eq!(cli.serve.verbosity, 2);
        assert!(!cli.serve.mutation.sts_regional_endpoint);
    }

    #[test]
    fn bad_values_give_one_line_naming_flag_value_and_expectation() {
        for (args, flag, value, expected) in [
            (&["--port=http"][..], "--port", "http", "port number"),
            (
                &["--tls-min-version=1.4"],
                "--tls-min-version",
                "1.4",
                "expected 1.2, 1.3",
            ),
            (
                &["--service-account-lookup-grace-period=5"],
                "--service-account-lookup-grace-period",
                "5",
                "Go duration",
            ),
            (
                &["--watch-config-map=yes"],
                "--watch-config-map",
                "yes",
                "boolean",
            ),
            (
                &["--token-mount-path=relative"],
                "--token-mount-path",
                "relative",
                "absolute path",
            ),
        ] {
            let err = parse(args).unwrap_err();
            let line = one_line(&err);
            assert!(line.contains(flag), "{line}");
            assert!(line.contains(value), "{line}");
            assert!(line.contains(expected), "{line}");
        }
    }

    #[test]
    fn mutate_subcommand_takes_mutation_flags() {
        let cli = parse(&[
            "mutate",
            "--pod",
            "-",
            "--service-account",
            "a.yaml",
            "--service-account=b.yaml",
            "--output=pod",
            "--aws-default-region=eu-west-1",
        ])
        .unwrap();
        let Command::Mutate(args) = cli.into_command() else {
            panic!()
        };
        assert_eq!(args.service_accounts.len(), 2);
        assert_eq!(args.output, OutputFormat::Pod);
        assert_eq!(
            args.mutation.settings().aws_default_region.as_deref(),
            Some("eu-west-1")
        );
    }

    #[test]
    fn doctor_takes_a_service_account_or_all_namespaces_and_not_both() {
        let doctor = |args: &[&str]| {
            let mut all = vec!["doctor"];
            all.extend_from_slice(args);
            parse(&all).map(|cli| match cli.into_command() {
                Command::Doctor(args) => args,
                _ => panic!("not doctor"),
            })
        };
        let args = doctor(&["team-a/app"]).unwrap();
        assert_eq!(args.service_account.as_deref(), Some("team-a/app"));
        assert!(!args.all_namespaces);
        let args = doctor(&["-A", "--page-size", "50"]).unwrap();
        assert!(args.all_namespaces && args.service_account.is_none());
        assert_eq!(args.page_size, 50);
        assert_eq!(doctor(&["--all-namespaces"]).unwrap().page_size, 500);
        for (args, wanted) in [
            (
                &[][..],
                "error: the following required arguments were not provided: <NAMESPACE/SERVICEACCOUNT>",
            ),
            (
                &["-A", "team-a/app"],
                "error: the argument '--all-namespaces' cannot be used with '[NAMESPACE/SERVICEACCOUNT]'",
            ),
            (
                &["-A", "--trust-policy", "role.json"],
                "error: the argument '--all-namespaces' cannot be used with '--trust-policy <FILE|DIR>'",
            ),
            (
                &["-A", "--page-size", "0"],
                "error: invalid value '0' for '--page-size <PAGE_SIZE>': 0 is not in 1..=5000",
            ),
            (
                &["team-a/app", "--page-size", "10"],
                "error: the argument '[NAMESPACE/SERVICEACCOUNT]' cannot be used with '--page-size <PAGE_SIZE>'",
            ),
        ] {
            assert_eq!(one_line(&doctor(args).unwrap_err()), wanted, "{args:?}");
        }
    }

    #[test]
    fn one_line_keeps_missing_arguments_possible_values_and_tips() {
        for (args, wanted) in [
            (
                &["mutate"][..],
                "error: the following required arguments were not provided: --pod <POD>",
            ),
            (
                &["mutate", "--pod", "p.yaml", "--output", "table"],
                "error: invalid value 'table' for '--output <OUTPUT>' [possible values: patch, pod, yaml]",
            ),
            (
                &["mutate", "--pod", "p.yaml", "--output", "yml"],
                "error: invalid value 'yml' for '--output <OUTPUT>' [possible values: patch, pod, yaml]; tip: a similar value exists: 'yaml'",
            ),
            (
                &["mutate", "--pod", "p.yaml", "--service-acount", "a.yaml"],
                "error: unexpected argument '--service-acount' found; tip: a similar argument exists: '--service-account'",
            ),
        ] {
            let line = one_line(&parse(args).unwrap_err());
            assert_eq!(line, wanted, "{args:?}");
            assert!(!line.contains('\n'), "{line}");
        }
        // Several missing arguments are listed with commas.
        let err = clap::Command::new("x")
            .arg(clap::Arg::new("a").long("a").required(true))
            .arg(clap::Arg::new("b").long("b").required(true))
            .try_get_matches_from(["x"])
            .unwrap_err();
        assert_eq!(
            one_line(&err),
            "error: the following required arguments were not provided: --a <a>, --b <b>"
        );
    }
}
