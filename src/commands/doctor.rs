//! The `doctor` command: gathers what the cluster and the given files say about one
//! ServiceAccount and runs the checks of `crate::irsa::doctor` over it, printing a checklist
//! (or JSON). Exit code 0 only when every check passes. With `--all-namespaces`, the audit of
//! every pod instead (`super::audit`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::{DoctorArgs, ReportFormat};
use crate::core::identity::{
    ConfigMapMapping, ContainerCredentialsConfig, CredentialKind, CONFIG_KEY,
};
use crate::core::settings::MutationSettings;
use crate::irsa::checklist::{Check, Report};
use crate::irsa::discovery::parse_jwks;
use crate::irsa::doctor::identity::{self, Found, IdentityInputs};
use crate::irsa::doctor::roles::{self, GivenPolicy};
use crate::irsa::doctor::token::{self, Published};
use crate::irsa::doctor::{pods, webhook};
use crate::irsa::issuer::{Issuer, DISCOVERY_PATH, JWKS_PATH};
use crate::irsa::policy;
use crate::sources::config_map_watch::CONFIG_MAP_NAME;

use super::{audit, cluster};

/// The files given on the command line, read before anything is asked of the cluster.
struct Inputs {
    trust_policies: Vec<GivenPolicy>,
    published: Option<Published>,
    container_credentials: Option<ContainerCredentialsConfig>,
}

pub fn run(args: DoctorArgs) -> ExitCode {
    // clap requires a ServiceAccount unless --all-namespaces is given.
    let subject = match args.service_account.as_deref() {
        Some(service_account) => {
            match super::split_service_account(service_account, "ServiceAccount", '/') {
                Ok(parts) => Some(parts),
                Err(message) => return super::bad_input(message),
            }
        }
        None => None,
    };
    let inputs = match read_inputs(&args) {
        Ok(inputs) => inputs,
        Err(message) => return super::bad_input(message),
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let Some((namespace, name)) = subject else {
        return audit::run(&runtime, &args, inputs.container_credentials.as_ref());
    };
    let report = match runtime.block_on(examine(&args, namespace, name, &inputs)) {
        Ok(report) => report,
        Err(message) => return super::bad_input(message),
    };
    match args.output {
        ReportFormat::Text => print!("{}", report.to_text()),
        ReportFormat::Json => println!("{}", report.to_json()),
    }
    ExitCode::from(report.exit_code())
}

fn read_inputs(args: &DoctorArgs) -> Result<Inputs, String> {
    let read = |flag: &str, path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|err| format!("{flag} {}: cannot read: {err}", path.display()))
    };
    let mut trust_policies = Vec::new();
    for path in policy_files(&args.trust_policies)? {
        let policy = policy::parse(&read("--trust-policy", &path)?)
            .map_err(|err| format!("--trust-policy {}: {err}", path.display()))?;
        trust_policies.push(GivenPolicy {
            source: path.display().to_string(),
            stem: path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default(),
            policy,
        });
    }
    let published = match &args.jwks {
        Some(path) => Some(read_published(path)?),
        None => None,
    };
    let container_credentials = match &args.mutation.watch_container_credentials_config {
        Some(path) => {
            let flag = "--watch-container-credentials-config";
            Some(
                ContainerCredentialsConfig::parse(read(flag, path)?.as_bytes())
                    .map_err(|err| format!("{flag} {}: {err}", path.display()))?,
            )
        }
        None => None,
    };
    Ok(Inputs {
        trust_policies,
        published,
        container_credentials,
    })
}

/// The files `--trust-policy` names: each file, and the `.json`, `.yaml` and `.yml` files of
/// each directory in name order.
fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path)
            .map_err(|err| format!("--trust-policy {}: cannot read: {err}", path.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|file| {
                let extension = file
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or_default();
                file.is_file() && matches!(extension, "json" | "yaml" | "yml")
            })
            .collect();
        if found.is_empty() {
            return Err(format!(
                "--trust-policy {}: the directory holds no .json, .yaml or .yml file",
                path.display()
            ));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// `--jwks`: a JWKS file, or the directory `oidc` wrote (discovery document and JWKS).
pub(crate) fn read_published(path: &Path) -> Result<Published, String> {
    let shown = path.display();
    if !path.is_dir() {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("--jwks {shown}: cannot read: {err}"))?;
        let jwks = parse_jwks(&text).map_err(|err| format!("--jwks {shown} {err}"))?;
        return Ok(Published {
            source: shown.to_string(),
            issuer: None,
            jwks,
        });
    }
    let discovery_path = path.join(DISCOVERY_PATH);
    let discovery: Value = std::fs::read_to_string(&discovery_path)
        .map_err(|err| format!("--jwks {shown}: cannot read {}: {err}; give the directory `oidc --out` wrote, or a JWKS file", discovery_path.display()))
        .and_then(|text| serde_json::from_str(&text).map_err(|err| format!("--jwks {shown}: {} is not JSON: {err}", discovery_path.display())))?;
    let issuer = discovery["issuer"].as_str().map(str::to_string);
    // The JWKS sits where the discovery document's jwks_uri says, relative to the issuer.
    let relative = issuer
        .as_deref()
        .and_then(|i| Issuer::parse(i).ok())
        .and_then(|i| {
            discovery["jwks_uri"]
                .as_str()?
                .strip_prefix(&format!("{}/", i.as_str().trim_end_matches('/')))
                .map(str::to_string)
        })
        .unwrap_or_else(|| JWKS_PATH.to_string());
    let jwks_path = path.join(relative);
    let text = std::fs::read_to_string(&jwks_path)
        .map_err(|err| format!("--jwks {shown}: cannot read {}: {err}", jwks_path.display()))?;
    let jwks = parse_jwks(&text).map_err(|err| format!("--jwks {} {err}", jwks_path.display()))?;
    Ok(Published {
        source: jwks_path.display().to_string(),
        issuer,
        jwks,
    })
}

async fn examine(
    args: &DoctorArgs,
    namespace: &str,
    name: &str,
    inputs: &Inputs,
) -> Result<Report, String> {
    let client = cluster::client(&args.cluster).await?;
    let settings: MutationSettings = args.mutation.settings();
    let mut checks: Vec<Check> = Vec::new();

    let annotations = match cluster::get(
        &client,
        &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}"),
    )
    .await
    {
        Ok(Some(sa)) => Found::Yes(string_map(&sa["metadata"]["annotations"])),
        Ok(None) => Found::NotFound,
        Err(err) => Found::Error(err),
    };
    let (mapping, mapping_note) = read_mapping(&client, &args.webhook_namespace).await;
    let identity_inputs = IdentityInputs {
        namespace,
        name,
        annotations: &annotations,
        mapping: mapping.as_ref(),
        container_credentials: inputs.container_credentials.as_ref(),
        settings: &settings,
    };
    let (sa_check, resolution) = identity::service_account(&identity_inputs);
    checks.push(sa_check);
    let resolved = resolution.as_ref().and_then(|r| r.identity.clone());
    if let Some(resolution) = &resolution {
        let mut check = identity::identity(&identity_inputs, resolution);
        if let Some(note) = mapping_note {
            check = check.detail(note);
        }
        checks.push(check);
    }

    // The webhook, as the API server sees it.
    let namespace_labels =
        match cluster::get(&client, &format!("/api/v1/namespaces/{namespace}")).await {
            Ok(Some(ns)) => string_map(&ns["metadata"]["labels"]),
            _ => BTreeMap::new(),
        };
    let configs = cluster::get(
        &client,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
    )
    .await;
    let entries = match configs {
        Ok(list) => {
            let items = list
                .and_then(|l| l["items"].as_array().cloned())
                .unwrap_or_default();
            let (check, entries) = webhook::registration(
                &items,
                args.webhook_config_name.as_deref(),
                namespace,
                &namespace_labels,
            );
            checks.push(check);
            entries
        }
        Err(err) => {
            checks.push(Check::new("webhook.registered", "a MutatingWebhookConfiguration sends this namespace's pod creations to the webhook")
                .fail(format!("cannot list MutatingWebhookConfigurations: {err}"), "use a kubeconfig that may list mutatingwebhookconfigurations"));
            Vec::new()
        }
    };
    checks.push(webhook::ca_bundle(&entries, super::now()));
    let mut probes = Vec::new();
    for entry in &entries {
        probes.push(match &entry.target {
            webhook::Target::Url(url) => webhook::Probe::Url {
                url: url.clone(),
                result: cluster::probe_url(url, &entry.ca_bundle).await,
            },
            webhook::Target::Service {
                namespace, name, ..
            } => webhook::Probe::Service {
                namespace: namespace.clone(),
                name: name.clone(),
                ready: cluster::service_endpoints(&client, namespace, name).await,
            },
        });
    }
    checks.push(webhook::readiness(&probes));
    let dry_run = match (&annotations, &resolved) {
        (Found::Yes(_), Some(_)) => {
            cluster::dry_run_pod(&client, namespace, &webhook::probe_pod(name)).await
        }
        _ => Err("not attempted".into()),
    };
    checks.push(webhook::dry_run(&dry_run, resolved.as_ref()));

    let listed = cluster::pods_of(&client, namespace, name).await;
    let container_roles = match &listed {
        Ok(pods) => roles::container_roles(pods, &settings.keys),
        Err(_) => roles::ContainerRoleUse::new(),
    };

    // The token and what IAM makes of it.
    match resolved.as_ref().map(|i| &i.source) {
        Some(CredentialKind::WebIdentity { role_arn, audience }) => {
            let requested = cluster::request_token(&client, namespace, name, audience).await;
            let (check, claims) = token::token(&requested, namespace, name, audience, super::now());
            checks.push(check);
            if let (Ok(jwt), Some(claims)) = (&requested, claims) {
                let cluster_keys = match cluster::get(&client, "/openid/v1/jwks").await {
                    Ok(Some(doc)) => parse_jwks(&doc.to_string()),
                    Ok(None) => Err("the API server serves no /openid/v1/jwks".into()),
                    Err(err) => Err(err),
                };
                checks.push(token::signature(
                    jwt,
                    inputs.published.as_ref(),
                    &cluster_keys,
                ));
                checks.push(token::issuer(&claims, inputs.published.as_ref()));
                let (assigned, unmatched) =
                    roles::assign(&inputs.trust_policies, role_arn, &container_roles);
                checks.push(token::trust_policy(
                    assigned.get(role_arn).map(|given| &given.policy),
                    &claims,
                    role_arn,
                ));
                checks.extend(roles::trust_policies(
                    &container_roles,
                    &assigned,
                    &unmatched,
                    &claims,
                    role_arn,
                ));
            }
        }
        Some(CredentialKind::ContainerCredentials) => {
            checks.push(Check::new("token.issued", "web identity token and trust policy").skip(
                "EKS Pod Identity: credentials come from the node agent and the role's pod-identity association, not from an OIDC trust policy",
            ));
        }
        Some(CredentialKind::RegionOnly) | None => {}
    }

    checks.push(pods::running_pods(&listed, resolved.as_ref(), &settings));
    checks.push(roles::report(&container_roles, &settings.keys));
    Ok(Report {
        subject: format!("ServiceAccount {namespace}/{name}"),
        checks,
    })
}

/// The role mapping the webhook would use, if its ConfigMap exists, with a note saying so.
pub(super) async fn read_mapping(
    client: &kube::Client,
    webhook_namespace: &str,
) -> (Option<ConfigMapMapping>, Option<String>) {
    let path = format!("/api/v1/namespaces/{webhook_namespace}/configmaps/{CONFIG_MAP_NAME}");
    match cluster::get(client, &path).await {
        Ok(Some(map)) => match map["data"][CONFIG_KEY].as_str().map(ConfigMapMapping::parse) {
            Some(Ok(parsed)) => (
                Some(parsed.mapping),
                Some(format!("role mapping read from ConfigMap {webhook_namespace}/{CONFIG_MAP_NAME} (used by the webhook with --watch-config-map)")),
            ),
            Some(Err(err)) => (None, Some(format!("ConfigMap {webhook_namespace}/{CONFIG_MAP_NAME} ignored: {err}"))),
            None => (None, None),
        },
        Ok(None) => (None, None),
        Err(err) => (None, Some(format!("role mapping not read: {err}"))),
    }
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irsa::discovery::documents;
    use crate::irsa::keys::jwks_from_pem;

    #[test]
    fn published_documents_are_read_back_from_the_directory_oidc_writes_or_a_jwks_file() {
        let dir = tempfile::tempdir().unwrap();
        let public = include_str!("../../tests/fixtures/irsa/rsa-2048.pub");
        let keys = jwks_from_pem("sa.pub", public.as_bytes()).unwrap();
        let issuer = Issuer::parse("https://oidc.example.com/c1/").unwrap();
        let docs = documents(&issuer, keys.clone()).unwrap();
        crate::commands::oidc::write(dir.path(), &issuer, &docs).unwrap();

        let published = read_published(dir.path()).unwrap();
        assert_eq!(
            published.issuer.as_deref(),
            Some("https://oidc.example.com/c1/")
        );
        assert_eq!(published.jwks.keys, keys);
        let file = dir.path().join(JWKS_PATH);
        let published = read_published(&file).unwrap();
        assert_eq!(published.issuer, None);
        assert_eq!(published.jwks.keys, keys);

        let empty = tempfile::tempdir().unwrap();
        let err = read_published(empty.path()).unwrap_err();
        assert!(
            err.starts_with(&format!("--jwks {}: cannot read", empty.path().display())),
            "{err}"
        );
        assert!(
            err.contains("give the directory `oidc --out` wrote"),
            "{err}"
        );
    }
}
