//! `doctor --all-namespaces`: reads the cluster page by page (the role mapping, the webhook's
//! configuration and the namespaces' labels, the metadata of every ServiceAccount, the pods not
//! finished, then the owners of the pods that need a restart) into
//! `crate::irsa::doctor::audit`, and prints its report.
//!
//! Requests stay bounded: one per page of each list, and for owners either one GET each (a
//! few) or the paged list of their kind (many), whichever is fewer.

use std::collections::BTreeSet;
use std::process::ExitCode;

use crate::cli::{DoctorArgs, ReportFormat};
use crate::core::identity::ContainerCredentialsConfig;
use crate::irsa::doctor::audit::{Audit, AuditReport, OwnerKey, OwnerRef, Owners, Selection};
use crate::irsa::doctor::webhook::DEFAULT_CONFIG_NAME;

use super::cluster::{self, Items};
use super::doctor::read_mapping;

/// Up to this many owners are read one GET each; more are found in their kind's list.
const OWNER_GETS: usize = 50;

/// The pods an audit judges: not finished (a field selector every API server supports).
const PODS: &str =
    "/api/v1/pods?fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed";

pub(super) fn run(
    runtime: &tokio::runtime::Runtime,
    args: &DoctorArgs,
    container_credentials: Option<&ContainerCredentialsConfig>,
) -> ExitCode {
    let report = match runtime.block_on(audit(args, container_credentials)) {
        Ok(report) => report,
        Err(message) => return super::bad_input(message),
    };
    match args.output {
        ReportFormat::Text => print!("{}", report.to_text()),
        ReportFormat::Json => println!("{}", report.to_json()),
    }
    ExitCode::from(report.exit_code())
}

async fn audit(
    args: &DoctorArgs,
    container_credentials: Option<&ContainerCredentialsConfig>,
) -> Result<AuditReport, String> {
    let client = cluster::client(&args.cluster).await?;
    let settings = args.mutation.settings();
    let limit = args.page_size;
    let (mapping, mapping_note) = read_mapping(&client, &args.webhook_namespace).await;
    let mut notes: Vec<String> = mapping_note.into_iter().collect();
    let (selection, selection_note) = selection(&client, args.webhook_config_name.as_deref()).await;
    notes.extend(selection_note);
    let mut requests = 2;
    let mut audit = Audit::new(
        &settings,
        mapping.as_ref(),
        container_credentials,
        selection,
    );
    if audit.selects_by_namespace() {
        requests += cluster::list_pages(
            &client,
            "/api/v1/namespaces",
            limit,
            Items::Metadata,
            |item| audit.namespace(&item),
        )
        .await
        .map_err(|err| {
            format!("cannot list namespaces: {err}; the audit needs list on namespaces to apply the webhook's namespaceSelector")
        })?;
    }
    requests += cluster::list_pages(
        &client,
        "/api/v1/serviceaccounts",
        limit,
        Items::Metadata,
        |item| audit.service_account(&item),
    )
    .await
    .map_err(|err| {
        format!("cannot list ServiceAccounts: {err}; the audit needs list on serviceaccounts and pods in every namespace")
    })?;
    requests += cluster::list_pages(&client, PODS, limit, Items::Whole, |item| {
        audit.pod(&item)
    })
    .await
    .map_err(|err| {
        format!("cannot list pods: {err}; the audit needs list on serviceaccounts and pods in every namespace")
    })?;
    let (owners, owner_requests) = look_up(&client, &audit.owners_to_look_up(), limit).await;
    requests += owner_requests;
    Ok(audit.finish(&owners, requests, notes))
}

/// Which pods the API server sends to the webhook, from its MutatingWebhookConfigurations
/// (one request); without them every pod is judged, and a note says why.
async fn selection(
    client: &kube::Client,
    wanted: Option<&str>,
) -> (Option<Selection>, Option<String>) {
    let path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
    let configs = match cluster::get(client, path).await {
        Ok(list) => list
            .and_then(|mut list| list["items"].as_array_mut().map(std::mem::take))
            .unwrap_or_default(),
        Err(err) => {
            return (
                None,
                Some(format!("the webhook's configuration could not be read ({err}): every pod is judged as if the webhook were called for it")),
            )
        }
    };
    match Selection::new(&configs, wanted) {
        Some(selection) => (Some(selection), None),
        None => {
            let looked_for = match wanted {
                Some(name) => format!("named {name}"),
                None => format!("whose name contains {DEFAULT_CONFIG_NAME}"),
            };
            (
                None,
                Some(format!("no MutatingWebhookConfiguration {looked_for} has a webhook for pod creation: every pod is judged as if the webhook were called for it")),
            )
        }
    }
}

/// The controllers of the ReplicaSets and Jobs in `wanted`, and the requests it took.
async fn look_up(
    client: &kube::Client,
    wanted: &BTreeSet<OwnerKey>,
    limit: u32,
) -> (Owners, usize) {
    let mut owners = Owners::new();
    let mut requests = 0;
    if wanted.len() <= OWNER_GETS {
        for key in wanted {
            let path = format!(
                "/apis/{}/namespaces/{}/{}/{}",
                key.owner.api_version,
                key.namespace,
                plural(&key.owner.kind),
                key.owner.name
            );
            requests += 1;
            let found = match cluster::get_metadata(client, &path).await {
                Ok(Some(object)) => Ok(OwnerRef::controller_of(&object["metadata"])),
                Ok(None) => Err("it no longer exists".to_string()),
                Err(err) => Err(err),
            };
            owners.insert(key.clone(), found);
        }
        return (owners, requests);
    }
    let kinds: BTreeSet<(&str, &str)> = wanted
        .iter()
        .map(|key| (key.owner.api_version.as_str(), key.owner.kind.as_str()))
        .collect();
    for (api_version, kind) in kinds {
        let path = format!("/apis/{api_version}/{}", plural(kind));
        let listed = cluster::list_pages(client, &path, limit, Items::Metadata, |item| {
            let metadata = &item["metadata"];
            let (Some(namespace), Some(name)) =
                (metadata["namespace"].as_str(), metadata["name"].as_str())
            else {
                return;
            };
            let key = OwnerKey {
                namespace: namespace.to_string(),
                owner: OwnerRef {
                    api_version: api_version.to_string(),
                    kind: kind.to_string(),
                    name: name.to_string(),
                },
            };
            if wanted.contains(&key) {
                owners.insert(key, Ok(OwnerRef::controller_of(metadata)));
            }
        })
        .await;
        match listed {
            Ok(count) => requests += count,
            Err(err) => {
                requests += 1;
                for key in wanted.iter().filter(|key| key.owner.kind == kind) {
                    owners.insert(key.clone(), Err(err.clone()));
                }
            }
        }
    }
    for key in wanted {
        owners
            .entry(key.clone())
            .or_insert_with(|| Err("it no longer exists".to_string()));
    }
    (owners, requests)
}

/// The resource name of the kinds looked up.
fn plural(kind: &str) -> String {
    format!("{}s", kind.to_ascii_lowercase())
}
