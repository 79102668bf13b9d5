//! Wiring only: parse the command line, build the parts, run the chosen command.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use pod_identity_webhook::cli::{self, Command, ServeArgs};
use pod_identity_webhook::commands;
use pod_identity_webhook::ops::health::Readiness;
use pod_identity_webhook::ops::logging;
use pod_identity_webhook::ops::metrics::Metrics;
use pod_identity_webhook::server::tls::{self, CertificateStore};
use pod_identity_webhook::server::{self, CacheDumper, Components, Server, ShutdownTiming};
use pod_identity_webhook::sources::file_watch::WatchOptions;
use pod_identity_webhook::sources::service_accounts::{CacheSettings, KubeServiceAccountCache};
use pod_identity_webhook::sources::WatchedConfig;
use pod_identity_webhook::sources::{config_map_watch, container_credentials_watch};

// jemalloc: as fast as the alternatives on a request's many small, short-lived allocations,
// and the one that hands memory back to the system after a burst (an attack, a large
// cluster's first list) without being called to: its background thread purges on a timer,
// configured in .cargo/config.toml (docs/benchmarks.md, "The allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match cli::parse_or_exit(std::env::args_os()).into_command() {
        Command::Mutate(args) => commands::mutate::run(args),
        Command::Oidc(args) => commands::oidc::run(args),
        Command::TrustPolicy(args) => commands::trust_policy::run(args),
        Command::Doctor(args) => commands::doctor::run(args),
        Command::Serve(args) => serve(args),
    }
}

/// Startup failed: the message is one line; 2 for a bad configuration, 1 for anything else.
struct Fatal(u8, String);

fn serve(args: ServeArgs) -> ExitCode {
    if let Err(problem) = args.validate() {
        eprintln!("error: {problem}");
        return ExitCode::from(2);
    }
    let log_writer = logging::init(args.log_format, args.verbosity);
    let without_effect = args.without_effect();
    if !without_effect.is_empty() {
        tracing::info!(
            flags = %without_effect.join(" "),
            "accepted for compatibility with the reference webhook; no effect here"
        );
    }
    // One worker per CPU (Tokio's default).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Background watches end with the runtime; nothing else needs waiting for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // Writes out the queued log lines, so they come before the final message.
    drop(log_writer);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(args: ServeArgs) -> Result<(), Fatal> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = Arc::new(args.mutation.settings());
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let watched_config = Arc::new(WatchedConfig::default());
    let store = Arc::new(CertificateStore::new(metrics.clone(), &readiness));
    let tls_config = tls::server_config(&args.tls_settings(), store.clone())
        .map_err(|err| Fatal(2, err.to_string()))?;

    let (client, api_server) = kube_client(&args).await?;
    // The watches log inside this span, so each of their lines names the API server.
    let api_span = tracing::info_span!("kube", api_server = %api_server);
    let cache = api_span.in_scope(|| {
        KubeServiceAccountCache::start(
            client.clone(),
            settings.keys.clone(),
            CacheSettings {
                grace_period: args.service_account_lookup_grace_period,
                ..CacheSettings::default()
            },
            metrics.clone(),
            &readiness,
        )
    });
    if args.watch_config_map {
        api_span.in_scope(|| {
            config_map_watch::start(
                client.clone(),
                args.namespace.clone(),
                watched_config.clone(),
                metrics.clone(),
                &readiness,
            )
        });
    }
    // The file watch stops when dropped, so it lives as long as `run`; the certificate
    // manager's task runs until the runtime ends.
    let _certificate_files = if args.in_cluster {
        pod_identity_webhook::certs::spawn(client, args.certs_config(), store.clone())
            .map_err(|err| Fatal(2, format!("{err:#}")))?;
        None
    } else {
        Some(tls::watch_files(
            args.tls_cert.clone(),
            args.tls_key.clone(),
            store.clone(),
            WatchOptions::default(),
        ))
    };
    let _container_credentials = args
        .mutation
        .watch_container_credentials_config
        .clone()
        .map(|path| {
            container_credentials_watch::start(
                path,
                watched_config.clone(),
                metrics.clone(),
                WatchOptions::default(),
            )
        });

    let cache_dumper: Option<CacheDumper> = args.enable_debugging_handlers.then(|| {
        let cache = cache.clone();
        Arc::new(move || cache.dump()) as CacheDumper
    });
    let components = Components {
        settings,
        service_accounts: cache,
        watched_config,
        metrics,
        readiness,
        cache_dumper,
    };
    let server = Server::listen(
        args.bind_address,
        args.port,
        args.bind_address,
        args.metrics_port,
    )
    .await
    .map_err(|err| Fatal(1, err.to_string()))?;
    let timing = ShutdownTiming {
        delay: args.shutdown_delay,
        timeout: args.shutdown_timeout,
    };
    server
        .run(
            Arc::new(tls_config),
            components,
            args.limits.limits(),
            timing,
            server::shutdown_signal(),
        )
        .await;
    Ok(())
}

/// A client from `--kubeconfig` when given, else the in-cluster or `$KUBECONFIG`
/// configuration; `--kube-api` replaces the server URL. Also returns that URL, for logs.
async fn kube_client(args: &ServeArgs) -> Result<(kube::Client, String), Fatal> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|err| Fatal(2, format!("--kubeconfig {}: {err}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|err| Fatal(2, format!("--kubeconfig {}: {err}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|err| {
            Fatal(2, format!("no Kubernetes configuration found (in-cluster, $KUBECONFIG or ~/.kube/config): {err}; pass --kubeconfig"))
        })?,
    };
    if let Some(url) = &args.kube_api {
        config.cluster_url = url
            .parse()
            .map_err(|err| Fatal(2, format!("--kube-api {url:?} is not a URL: {err}")))?;
    }
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|err| Fatal(2, format!("cannot build the Kubernetes client: {err}")))?;
    Ok((client, url))
}
