//! The `mutate` command: runs the engine on manifest files, exactly as the server would on
//! an admission request, and prints the patch or the patched pod.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::{MutateArgs, OutputFormat};
use crate::commands::manifests::{display_name, read_documents, Document, ManifestError};
use crate::core::decision::decide;
use crate::core::identity::{
    ConfigMapMapping, ContainerCredentialsConfig, IdentityInputs, ServiceAccountAnnotations,
    CONFIG_KEY,
};
use crate::core::pod::Pod;
use crate::core::settings::MutationSettings;
use crate::sources::service_accounts::FixedServiceAccounts;

const DEFAULT_NAMESPACE: &str = "default";

/// Runs the command: the result on standard output, warnings on standard error; on bad input
/// one line naming the file and the problem, exit code 2 and nothing on standard output.
pub fn run(args: MutateArgs) -> ExitCode {
    match render(&args) {
        Ok((output, warnings)) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{output}").is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

/// The text to print and the warnings, or the one error that stops the command.
pub fn render(args: &MutateArgs) -> Result<(String, Vec<String>), ManifestError> {
    let settings = args.mutation.settings();
    let mut warnings = Vec::new();
    let mut service_accounts = FixedServiceAccounts::default();
    // `namespace/name` of every ServiceAccount given, in order, for the note on a missing one.
    let mut given = Vec::new();

    let pod_file = display_name(&args.pod);
    let mut pod = None;
    for document in read_documents(&args.pod)? {
        if document.is_core_v1("Pod") {
            if pod.is_some() {
                return Err(ManifestError::new(
                    &pod_file,
                    format!(
                        "{} is a second Pod; give one Pod per run",
                        document.describe()
                    ),
                ));
            }
            pod = Some(document.object);
        } else if document.is_core_v1("ServiceAccount") {
            given.push(add_service_account(
                &mut service_accounts,
                &document,
                &settings,
                &pod_file,
            )?);
        } else {
            return Err(ManifestError::new(
                &pod_file,
                format!("{} is not a Pod or ServiceAccount", document.describe()),
            ));
        }
    }
    let pod =
        pod.ok_or_else(|| ManifestError::new(&pod_file, "holds no Pod (apiVersion v1, kind Pod)"))?;

    for path in &args.service_accounts {
        for document in read_documents(path)? {
            if !document.is_core_v1("ServiceAccount") {
                return Err(ManifestError::new(
                    &display_name(path),
                    format!("{} is not a ServiceAccount", document.describe()),
                ));
            }
            given.push(add_service_account(
                &mut service_accounts,
                &document,
                &settings,
                &display_name(path),
            )?);
        }
    }

    let mapping = match &args.config_map {
        Some(path) => Some(read_mapping(path, &mut warnings)?),
        None => None,
    };
    let container_credentials = match &args.mutation.watch_container_credentials_config {
        Some(path) => Some(read_container_credentials(path)?),
        None => None,
    };

    let read =
        Pod::from_value(&pod).map_err(|err| ManifestError::new(&pod_file, err.to_string()))?;
    let namespace = match read.namespace() {
        "" => DEFAULT_NAMESPACE,
        namespace => namespace,
    };
    let service_account = read.service_account();
    let annotations = service_accounts.get(namespace, service_account);
    if annotations.is_none() {
        warnings.push(missing_service_account(namespace, service_account, &given));
    }
    let sources = IdentityInputs {
        service_account: annotations.as_deref(),
        mapping: mapping.as_ref(),
        container_credentials: container_credentials.as_ref(),
    };
    let decision = decide(&read, namespace, sources, &settings, &mut |range| {
        rand::random_range(range)
    });
    warnings.extend(decision.warnings);

    let patch = decision.patch.unwrap_or_default();
    let operations = patch.operations().map_err(|err| {
        ManifestError::new(
            &pod_file,
            format!("the patch written for it does not read back as a JSON patch ({err}); this is a bug, please report it with the pod"),
        )
    })?;
    let patched = || {
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &operations).map_err(|err| {
            ManifestError::new(&pod_file, format!("the patch does not apply: {err}"))
        })?;
        Ok::<_, ManifestError>(patched)
    };
    let output = match args.output {
        OutputFormat::Patch => json_text(&operations),
        OutputFormat::Pod => json_text(&patched()?),
        OutputFormat::Yaml => yaml_text(&patched()?),
    };
    Ok((output, warnings))
}

fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("JSON values always serialize")
}

/// YAML without the trailing newline, as `json_text` has none: `run` adds one.
fn yaml_text(value: &Value) -> String {
    let text = serde_yaml_ng::to_string(value).expect("JSON values always serialize as YAML");
    text.trim_end_matches('\n').to_string()
}

/// The warning for a pod whose ServiceAccount was not given: without it nothing from its
/// annotations can apply, and an empty patch alone looks like the webhook does nothing.
fn missing_service_account(namespace: &str, name: &str, given: &[String]) -> String {
    let what = format!("the pod runs as ServiceAccount {namespace}/{name}");
    let fix = "pass its manifest with --service-account FILE to apply its annotations";
    if given.is_empty() {
        return format!("{what}, and no ServiceAccount was given: {fix}");
    }
    const SHOWN: usize = 5;
    let mut names = given
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if given.len() > SHOWN {
        names.push_str(&format!(" and {} more", given.len() - SHOWN));
    }
    format!("{what}, which is not among the ServiceAccounts given ({names}): {fix}")
}

/// Adds one ServiceAccount document; returns its `namespace/name`.
fn add_service_account(
    service_accounts: &mut FixedServiceAccounts,
    document: &Document,
    settings: &MutationSettings,
    file: &str,
) -> Result<String, ManifestError> {
    let namespace = document
        .metadata_str("namespace")
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    let name = document
        .metadata_str("name")
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            ManifestError::new(
                file,
                format!("{} has no metadata.name", document.describe()),
            )
        })?;
    let annotations: std::collections::BTreeMap<String, String> = document
        .object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    service_accounts.insert(
        namespace,
        name,
        ServiceAccountAnnotations::from_annotations(&annotations, &settings.keys),
    );
    Ok(format!("{namespace}/{name}"))
}

fn read_mapping(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<ConfigMapMapping, ManifestError> {
    let file = display_name(path);
    let documents = read_documents(path)?;
    let [document] = documents.as_slice() else {
        return Err(ManifestError::new(
            &file,
            format!(
                "expected one ConfigMap, found {} documents",
                documents.len()
            ),
        ));
    };
    if !document.is_core_v1("ConfigMap") {
        return Err(ManifestError::new(
            &file,
            format!("{} is not a ConfigMap", document.describe()),
        ));
    }
    let config = document
        .object
        .get("data")
        .and_then(|data| data.get(CONFIG_KEY))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ManifestError::new(&file, format!("ConfigMap has no data.{CONFIG_KEY} string"))
        })?;
    let parsed = ConfigMapMapping::parse(config)
        .map_err(|err| ManifestError::new(&file, err.to_string()))?;
    warnings.extend(
        parsed
            .skipped
            .into_iter()
            .map(|skip| format!("{file}: {skip}")),
    );
    Ok(parsed.mapping)
}

fn read_container_credentials(path: &Path) -> Result<ContainerCredentialsConfig, ManifestError> {
    let file = display_name(path);
    let content = std::fs::read(path)
        .map_err(|err| ManifestError::new(&file, format!("cannot read: {err}")))?;
    ContainerCredentialsConfig::parse(&content)
        .map_err(|err| ManifestError::new(&file, err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_service_account_names_the_pods_and_at_most_five_given() {
        let none = missing_service_account("team", "app", &[]);
        assert_eq!(
            none,
            "the pod runs as ServiceAccount team/app, and no ServiceAccount was given: pass its \
             manifest with --service-account FILE to apply its annotations"
        );
        let given: Vec<String> = (1..=7).map(|n| format!("team/sa{n}")).collect();
        let many = missing_service_account("team", "app", &given);
        assert!(
            many.contains("(team/sa1, team/sa2, team/sa3, team/sa4, team/sa5 and 2 more)"),
            "{many}"
        );
    }

    #[test]
    fn yaml_output_has_no_trailing_newline_like_json_output() {
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        assert_eq!(
            yaml_text(&pod),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p"
        );
        assert!(!json_text(&pod).ends_with('\n'));
    }
}
