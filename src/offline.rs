//! The `mutate` command: runs the engine on manifest files, exactly as the server would on
//! an admission request, and prints the patch or the patched pod.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::cache::FixedServiceAccounts;
use crate::cli::{MutateArgs, OutputFormat};
use crate::identity::{
    ConfigMapMapping, ContainerCredentialsConfig, IdentitySources, ServiceAccountAnnotations,
    CONFIG_KEY,
};
use crate::manifests::{display_name, read_documents, Document, ManifestError};
use crate::pipeline::{mutate_with_sources, random_jitter, service_account_name};
use crate::settings::MutationSettings;

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
            add_service_account(&mut service_accounts, &document, &settings, &pod_file)?;
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
            add_service_account(
                &mut service_accounts,
                &document,
                &settings,
                &display_name(path),
            )?;
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

    let namespace = pod
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string();
    let as_pod_error =
        |err: crate::mutate::PodShapeError| ManifestError::new(&pod_file, err.to_string());
    let service_account = service_account_name(&pod).map_err(as_pod_error)?;
    let annotations = service_accounts.get(&namespace, service_account);
    let sources = IdentitySources {
        service_account: annotations.as_deref(),
        mapping: mapping.as_ref(),
        container_credentials: container_credentials.as_ref(),
    };
    let outcome = mutate_with_sources(
        &pod,
        &namespace,
        service_account,
        sources,
        &settings,
        &mut random_jitter,
    )
    .map_err(as_pod_error)?;
    warnings.extend(outcome.mutation.warnings.iter().cloned());

    let output = match args.output {
        OutputFormat::Patch => serde_json::to_string_pretty(&outcome.mutation.patch),
        OutputFormat::Pod => {
            let mut patched = pod.clone();
            json_patch::patch(&mut patched, &outcome.mutation.patch).map_err(|err| {
                ManifestError::new(&pod_file, format!("the patch does not apply: {err}"))
            })?;
            serde_json::to_string_pretty(&patched)
        }
    }
    .expect("JSON values always serialize");
    Ok((output, warnings))
}

fn add_service_account(
    service_accounts: &mut FixedServiceAccounts,
    document: &Document,
    settings: &MutationSettings,
    file: &str,
) -> Result<(), ManifestError> {
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
    Ok(())
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
