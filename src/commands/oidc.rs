//! The `oidc` command: writes the discovery document and JWKS for a public issuer URL from
//! the key files or the cluster, then checks them against the cluster: its configured issuer
//! and a token it issues now.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jsonwebtoken::jwk::{Jwk, JwkSet};

use crate::cli::OidcArgs;
use crate::core::settings::DEFAULT_TOKEN_AUDIENCE;
use crate::irsa::checklist::{Check, Report};
use crate::irsa::discovery::{compare_keys, documents, parse_jwks, Documents};
use crate::irsa::issuer::{describe_difference, Issuer, DISCOVERY_PATH, JWKS_PATH};
use crate::irsa::keys::jwks_from_pem;
use crate::irsa::token::{read_claims, verify};

use super::cluster;

/// What the cluster told us, each part possibly failed.
struct FromCluster {
    issuer: Result<String, String>,
    keys: Result<JwkSet, String>,
    token: Result<String, String>,
}

pub fn run(args: OidcArgs) -> ExitCode {
    let issuer = match Issuer::parse(&args.issuer_url) {
        Ok(issuer) => issuer,
        Err(err) => return super::bad_input(format!("--issuer-url: {err}")),
    };
    if args.offline && args.key_files.is_empty() {
        return super::bad_input(
            "--offline needs --key-file: without the cluster, the keys come from the files",
        );
    }
    let (namespace, name) =
        match super::split_service_account(&args.service_account, "--service-account", '/') {
            Ok(parts) => parts,
            Err(message) => return super::bad_input(message),
        };
    let mut file_keys: Vec<Jwk> = Vec::new();
    for path in &args.key_files {
        let content = match std::fs::read(path) {
            Ok(content) => content,
            Err(err) => {
                return super::bad_input(format!(
                    "--key-file {}: cannot read: {err}",
                    path.display()
                ))
            }
        };
        match jwks_from_pem(&format!("--key-file {}", path.display()), &content) {
            Ok(keys) => file_keys.extend(keys),
            Err(err) => return super::bad_input(err),
        }
    }
    let from_cluster = if args.offline {
        None
    } else {
        let runtime = match super::runtime() {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        Some(runtime.block_on(fetch(&args, namespace, name)))
    };
    let keys = if file_keys.is_empty() {
        match from_cluster.as_ref().map(|c| &c.keys) {
            Some(Ok(keys)) => keys.keys.clone(),
            Some(Err(err)) => {
                eprintln!("error: cannot read the cluster's keys ({err}); pass --key-file with the API server's --service-account-key-file");
                return ExitCode::FAILURE;
            }
            None => Vec::new(),
        }
    } else {
        file_keys.clone()
    };
    let documents = match documents(&issuer, keys) {
        Ok(documents) => documents,
        Err(err) => return super::bad_input(err),
    };
    let written = match write(&args.out, &issuer, &documents) {
        Ok(written) => written,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut checks = vec![written];
    match &from_cluster {
        None => checks.push(
            Check::new("cluster", "checked against the cluster")
                .skip("--offline: the cluster's issuer and tokens were not checked"),
        ),
        Some(cluster) => checks.extend(check(
            &issuer,
            &documents.jwks,
            !file_keys.is_empty(),
            cluster,
            namespace,
            name,
        )),
    }
    let report = Report {
        subject: format!("OIDC documents for {issuer}"),
        checks,
    };
    print!("{}", report.to_text());
    ExitCode::from(report.exit_code())
}

async fn fetch(args: &OidcArgs, namespace: &str, name: &str) -> FromCluster {
    let client = match cluster::client(&args.cluster).await {
        Ok(client) => client,
        Err(err) => {
            let err = format!("{err} (or pass --offline to only write the documents)");
            return FromCluster {
                issuer: Err(err.clone()),
                keys: Err(err.clone()),
                token: Err(err),
            };
        }
    };
    let issuer = match cluster::get(&client, "/.well-known/openid-configuration").await {
        Ok(Some(doc)) => doc["issuer"].as_str().map(str::to_string).ok_or_else(|| "the cluster's discovery document has no issuer".to_string()),
        Ok(None) => Err("the API server serves no /.well-known/openid-configuration (is --service-account-issuer set?)".into()),
        Err(err) => Err(err),
    };
    let keys = match cluster::get(&client, "/openid/v1/jwks").await {
        Ok(Some(doc)) => {
            parse_jwks(&doc.to_string()).map_err(|err| format!("/openid/v1/jwks {err}"))
        }
        Ok(None) => Err("the API server serves no /openid/v1/jwks".into()),
        Err(err) => Err(err),
    };
    let token = cluster::request_token(&client, namespace, name, DEFAULT_TOKEN_AUDIENCE)
        .await
        .map_err(|err| format!("TokenRequest for ServiceAccount {namespace}/{name}: {err} (choose another with --service-account)"));
    FromCluster {
        issuer,
        keys,
        token,
    }
}

/// Writes both documents under `out`, at the paths they are served from.
pub(crate) fn write(out: &Path, issuer: &Issuer, documents: &Documents) -> Result<Check, String> {
    let discovery_path: PathBuf = out.join(DISCOVERY_PATH);
    let jwks_path: PathBuf = out.join(JWKS_PATH);
    for (path, value) in [
        (&discovery_path, serde_json::to_value(&documents.discovery)),
        (&jwks_path, serde_json::to_value(&documents.jwks)),
    ] {
        let text = serde_json::to_string_pretty(&value.expect("documents serialize"))
            .expect("JSON values always serialize");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| format!("--out: cannot create {}: {err}", parent.display()))?;
        }
        std::fs::write(path, format!("{text}\n"))
            .map_err(|err| format!("--out: cannot write {}: {err}", path.display()))?;
    }
    let kids: Vec<String> = documents
        .jwks
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    Ok(Check::new("documents.written", "documents written")
        .detail(discovery_path.display().to_string())
        .detail(format!(
            "{} ({} key(s): {})",
            jwks_path.display(),
            kids.len(),
            kids.join(", ")
        ))
        .detail(format!(
            "serve them at {} and {}",
            issuer.join(DISCOVERY_PATH),
            issuer.jwks_uri()
        )))
}

fn check(
    issuer: &Issuer,
    written: &JwkSet,
    from_files: bool,
    cluster: &FromCluster,
    namespace: &str,
    name: &str,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let issuer_check = Check::new(
        "issuer.matches",
        "the cluster's configured issuer equals the issuer URL",
    );
    checks.push(match &cluster.issuer {
        Ok(configured) => match describe_difference(issuer.as_str(), configured) {
            None => issuer_check.detail(format!("issuer {configured}")),
            Some(difference) => issuer_check.fail(
                format!("--issuer-url vs the API server's --service-account-issuer: {difference}; tokens carry the configured issuer, and STS looks the provider up by it"),
                format!("set the API server's --service-account-issuer to {issuer} (keep the old one as a second --service-account-issuer during the change), or publish at {configured}"),
            ),
        },
        Err(err) => issuer_check.fail(format!("cannot read the cluster's issuer: {err}"), "check the kubeconfig, or pass --offline"),
    });
    if from_files {
        let keys_check = Check::new(
            "keys.match",
            "the key files hold every key the cluster verifies with",
        );
        checks.push(match &cluster.keys {
            Ok(cluster_keys) => {
                let difference = compare_keys(written, cluster_keys);
                let mut check = keys_check;
                if !difference.unpublished.is_empty() {
                    check = check.fail(
                        format!("the cluster has key(s) {} that the key files do not hold", difference.unpublished.join(", ")),
                        "give every file of the API server's --service-account-key-file, or leave out --key-file to publish the cluster's keys",
                    );
                }
                if !difference.stale.is_empty() {
                    check = check.fail(
                        format!("the key files hold key(s) {} that the cluster does not use", difference.stale.join(", ")),
                        "give the API server's current --service-account-key-file (the public half of --service-account-signing-key-file)",
                    );
                }
                check
            }
            Err(err) => keys_check.fail(format!("cannot read the cluster's keys: {err}"), "check the kubeconfig, or pass --offline"),
        });
    }
    let token_check = Check::new("token.verifies", format!("a token the cluster issues now (for {namespace}/{name}) verifies against the written keys"));
    checks.push(match &cluster.token {
        Ok(token) => match verify(token, written) {
            Ok(kid) => {
                let iss = read_claims(token).ok().and_then(|c| c.iss).unwrap_or_default();
                token_check.detail(format!("signed with key {kid}, iss {iss}"))
            }
            Err(err) => token_check.fail(err.to_string(), "publish the key the cluster signs with: the public half of the API server's --service-account-signing-key-file"),
        },
        Err(err) => token_check.fail(err.clone(), "check the kubeconfig, or pass --offline"),
    });
    checks
}
