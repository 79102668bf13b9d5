//! The cases: seeded random valid pods (containers, init containers and native sidecars, env
//! entries, volumes and mounts, annotations), ServiceAccounts, container-credentials files and
//! flags, with the odd but valid values the reference must agree on.

use std::collections::HashSet;

use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

use super::rules::same_path;
use super::{
    DEFAULT_CC_MOUNT_PATH, DEFAULT_MOUNT_PATH, POD_IDENTITY_LABEL, UNKNOWN_FIELD,
    WEB_IDENTITY_TOKEN_PATH, WEB_IDENTITY_VOLUME,
};

struct Gen(Xoshiro256PlusPlus);

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.0.random_bool(p)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items.choose(&mut self.0).unwrap().clone()
    }

    fn up_to(&mut self, n: usize) -> usize {
        self.0.random_range(0..=n)
    }
}

/// Token lifetimes as annotation values: valid, clamped, odd but valid for Go's ParseInt, and
/// not numbers at all.
const EXPIRATIONS: &[&str] = &[
    "3600",
    "600",
    "599",
    "0",
    "-1",
    "+7200",
    "0900",
    "86400",
    "100000",
    "9223372036854775807",
    "9223372036854775808",
    "1h",
    "1e3",
    " 700",
    "",
];

/// The reference's flag defaults, under its flag names.
pub(super) fn default_flags() -> Value {
    json!({
        "annotation-prefix": "eks.amazonaws.com",
        "token-audience": "sts.amazonaws.com",
        "token-mount-path": DEFAULT_MOUNT_PATH,
        "token-expiration": 86400,
        "aws-default-region": "",
        "sts-regional-endpoint": false,
        "container-credentials-audience": "pods.eks.amazonaws.com",
        "container-credentials-token-mount-path": DEFAULT_CC_MOUNT_PATH,
        "container-credentials-token-volume-name": "eks-pod-identity-token",
        "container-credentials-token-path": "eks-pod-identity-token",
        "container-credentials-full-uri": "http://169.254.170.23/v1/credentials",
    })
}

/// Case `index` of the run seeded with `seed`: each case has its own random stream, so one
/// case can be looked at alone.
pub(super) fn generate(seed: u64, index: u64) -> Value {
    let mut g = Gen(Xoshiro256PlusPlus::seed_from_u64(
        seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ));
    let prefix = if g.chance(0.8) {
        "eks.amazonaws.com"
    } else {
        g.pick(&["example.com", "irsa.example.org"])
    };
    let other_prefix = if prefix == "example.com" {
        "eks.amazonaws.com"
    } else {
        "example.com"
    };
    let custom = g.chance(0.3);
    let flags = json!({
        "annotation-prefix": prefix,
        "token-audience": if g.chance(0.8) { "sts.amazonaws.com" } else { "custom-audience" },
        "token-mount-path": if g.chance(0.7) {
            DEFAULT_MOUNT_PATH.to_string()
        } else {
            g.pick(&[
                format!("{DEFAULT_MOUNT_PATH}/"),
                "/aws/token".to_string(),
                "/var/run/secrets//eks.amazonaws.com/serviceaccount".to_string(),
            ])
        },
        "token-expiration": if g.chance(0.7) { 86400 } else { g.pick(&[600, 599, 3600, 0, -5, 100_000]) },
        "aws-default-region": if g.chance(0.6) { "" } else { g.pick(&["us-west-2", "cn-north-1"]) },
        "sts-regional-endpoint": g.chance(0.3),
        "container-credentials-audience": if custom { "custom-pods" } else { "pods.eks.amazonaws.com" },
        "container-credentials-token-mount-path": if custom { "/cc/" } else { DEFAULT_CC_MOUNT_PATH },
        "container-credentials-token-volume-name": if custom { "cc-token" } else { "eks-pod-identity-token" },
        "container-credentials-token-path": if custom { "token" } else { "eks-pod-identity-token" },
        "container-credentials-full-uri": if custom { "http://127.0.0.1:8080/creds" } else { "http://169.254.170.23/v1/credentials" },
    });
    let namespace = g.pick(&["default", "team-a", "kube-system"]);
    let service_account = g.pick(&["app", "default", "sa-1"]);

    let mut sa_annotations = serde_json::Map::new();
    let mut annotate = |g: &mut Gen, key: &str, p: f64, values: &[&str]| {
        if g.chance(p) {
            sa_annotations.insert(format!("{prefix}/{key}"), g.pick(values).into());
        }
    };
    annotate(
        &mut g,
        "role-arn",
        0.85,
        &[
            "arn:aws:iam::111122223333:role/app",
            "arn:aws:iam::111122223333:role/path/to/app",
            "arn:aws-cn:iam::111122223333:role/app",
            "arn:aws:iam::111122223333:role/app",
            "my-role",
            "",
        ],
    );
    annotate(
        &mut g,
        "audience",
        0.2,
        &["", "sts.amazonaws.com", "custom", " spaced "],
    );
    annotate(
        &mut g,
        "sts-regional-endpoints",
        0.25,
        &[
            "true", "false", "1", "0", "t", "F", "TRUE", "True", "yes", "", " true",
        ],
    );
    annotate(&mut g, "token-expiration", 0.25, EXPIRATIONS);
    if g.chance(0.1) {
        // Annotations of another prefix are not read.
        sa_annotations.insert(
            format!("{other_prefix}/role-arn"),
            "arn:aws:iam::111122223333:role/other".into(),
        );
    }
    let sa = if g.chance(0.1) {
        Value::Null
    } else {
        json!({"name": service_account, "annotations": sa_annotations})
    };
    let container_credentials = if g.chance(0.2) {
        let listed = if g.chance(0.8) {
            service_account
        } else {
            "other"
        };
        json!({"identities": [{"namespace": namespace, "serviceAccount": listed}]})
    } else {
        Value::Null
    };

    let pod = generate_pod(&mut g, &flags, namespace, service_account, other_prefix);
    json!({
        "flags": flags,
        "namespace": namespace,
        "pod": pod,
        "serviceAccount": sa,
        "containerCredentials": container_credentials,
        "seed": index,
    })
}

fn generate_pod(
    g: &mut Gen,
    flags: &Value,
    namespace: &str,
    service_account: &str,
    other_prefix: &str,
) -> Value {
    let flag = |name: &str| flags[name].as_str().unwrap().to_string();
    let prefix = flag("annotation-prefix");
    let token_volumes = [
        WEB_IDENTITY_VOLUME.to_string(),
        flag("container-credentials-token-volume-name"),
    ];
    let token_paths = [
        WEB_IDENTITY_TOKEN_PATH.to_string(),
        flag("container-credentials-token-path"),
    ];
    let mount_paths = [
        flag("token-mount-path"),
        flag("container-credentials-token-mount-path"),
    ];

    // Volumes, with unique names; sometimes one named like a token volume.
    let mut volumes = Vec::new();
    let mut volume_names: Vec<String> = Vec::new();
    for i in 0..g.up_to(4) {
        let name = if g.chance(0.12) {
            g.pick(&token_volumes)
        } else {
            format!("vol-{i}")
        };
        if volume_names.contains(&name) {
            continue;
        }
        let token_path = g.pick(&token_paths);
        let volume = match g.up_to(5) {
            0 => json!({"name": name, "emptyDir": {}}),
            1 => json!({"name": name, "configMap": {"name": "config"}}),
            2 => json!({"name": name, "secret": {"secretName": "secret"}}),
            3 => json!({"name": name, "persistentVolumeClaim": {"claimName": "claim"}}),
            4 => json!({"name": name, "projected": {"sources": [
                {"serviceAccountToken": {"audience": "own", "expirationSeconds": 3600, "path": token_path}}
            ]}}),
            _ => json!({"name": name, "projected": {"sources": [
                {"configMap": {"name": "config"}},
                {"serviceAccountToken": {"expirationSeconds": 7200, "path": "other-token"}}
            ]}}),
        };
        volume_names.push(name);
        volumes.push(volume);
    }
    let claims: Vec<String> = volumes
        .iter()
        .filter(|v| v.get("persistentVolumeClaim").is_some())
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();

    // Container names, unique across the pod.
    let mut names: Vec<String> = Vec::new();
    let mut fresh_name = |g: &mut Gen| loop {
        let name = g.pick(&[
            "app",
            "sidecar",
            "vault-agent",
            "istio-proxy",
            "setup",
            "init-db",
            "metrics",
            "log-shipper",
        ]);
        let name = if names.iter().any(|n| n == name) {
            format!("{name}-{}", g.up_to(99))
        } else {
            name.to_string()
        };
        if !names.contains(&name) {
            names.push(name.clone());
            break name;
        }
    };
    let container = |g: &mut Gen, name: String, sidecar: bool| {
        let mut c = json!({"name": name, "image": format!("registry.example/{name}:1")});
        if sidecar {
            c["restartPolicy"] = "Always".into();
        }
        if g.chance(0.3) {
            c["command"] = json!(["sh", "-c", "sleep 3600"]);
        }
        if g.chance(0.2) {
            c["ports"] = json!([{"containerPort": 8080, "protocol": "TCP"}]);
        }
        if g.chance(0.2) {
            c["resources"] = json!({"limits": {"cpu": "100m", "memory": "64Mi"}});
        }
        if g.chance(0.1) {
            c["securityContext"] = json!({"readOnlyRootFilesystem": true, "runAsNonRoot": true});
        }
        if g.chance(0.05) {
            c[UNKNOWN_FIELD] = json!({"kept": true, "n": 1});
        }
        if g.chance(0.6) {
            let mut env = Vec::new();
            let mut seen = HashSet::new();
            for _ in 0..g.up_to(5) {
                let name = g.pick(&[
                    "AWS_ROLE_ARN",
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_REGION",
                    "AWS_DEFAULT_REGION",
                    "AWS_STS_REGIONAL_ENDPOINTS",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    "FOO",
                    "PATH",
                ]);
                if !seen.insert(name) {
                    continue;
                }
                env.push(if g.chance(0.1) {
                    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
                } else {
                    json!({"name": name, "value": g.pick(&["", "x", "us-east-1", "regional", "/own/token"])})
                });
            }
            c["env"] = env.into();
        }
        // Mounts of the pod's volumes (and now and then of the token volume the webhook adds),
        // at paths unique in the container, often at or near a token mount path.
        let mut paths: Vec<String> = Vec::new();
        let mut mounts = Vec::new();
        let mut mounted = HashSet::new();
        for _ in 0..g.up_to(3) {
            let volume = if volume_names.is_empty() || g.chance(0.15) {
                g.pick(&token_volumes)
            } else {
                g.pick(&volume_names)
            };
            let base = g.pick(&mount_paths);
            let path = g.pick(&[
                base.clone(),
                format!("{}/", base.trim_end_matches('/')),
                format!("{}/nested", base.trim_end_matches('/')),
                DEFAULT_MOUNT_PATH.to_string(),
                "/data".to_string(),
                "/etc/config".to_string(),
                "/cache".to_string(),
                "/var/lib/app".to_string(),
            ]);
            if paths.iter().any(|p| same_path(p, &path)) {
                continue;
            }
            let mut mount = json!({"name": volume, "mountPath": path});
            match g.up_to(4) {
                0 => mount["readOnly"] = true.into(),
                1 => mount["readOnly"] = false.into(),
                2 if g.chance(0.3) => mount["subPath"] = "sub".into(),
                2 if g.chance(0.2) => mount["subPathExpr"] = "$(POD_NAME)".into(),
                _ => {}
            }
            mounted.insert(volume);
            paths.push(path);
            mounts.push(mount);
        }
        if !mounts.is_empty() || g.chance(0.05) {
            c["volumeMounts"] = mounts.into();
        }
        let free: Vec<&String> = claims.iter().filter(|c| !mounted.contains(*c)).collect();
        if !free.is_empty() && g.chance(0.3) {
            let near = g.pick(&mount_paths);
            let path = g.pick(&[near, "/dev/xvdb".to_string()]);
            if !paths.iter().any(|p| same_path(p, &path)) {
                c["volumeDevices"] = json!([{"name": g.pick(&free), "devicePath": path}]);
            }
        }
        c
    };
    let containers: Vec<Value> = (0..1 + g.up_to(3))
        .map(|_| {
            let name = fresh_name(g);
            container(g, name, false)
        })
        .collect();
    let init_containers: Vec<Value> = (0..g.up_to(3))
        .map(|_| {
            let name = fresh_name(g);
            let sidecar = g.chance(0.4);
            container(g, name, sidecar)
        })
        .collect();

    let mut spec = json!({"serviceAccountName": service_account, "containers": containers});
    if !init_containers.is_empty() || g.chance(0.1) {
        spec["initContainers"] = init_containers.into();
    }
    if g.chance(0.1) {
        let name = fresh_name(g);
        spec["ephemeralContainers"] =
            json!([{"name": name, "image": "busybox", "targetContainerName": names[0]}]);
    }
    if !volumes.is_empty() || g.chance(0.3) {
        spec["volumes"] = volumes.into();
    }
    if g.chance(0.2) {
        let key = g.pick(&["kubernetes.io/os", "beta.kubernetes.io/os"]);
        let os = g.pick(&["windows", "linux", "Windows"]);
        spec["nodeSelector"] = json!({key: os, "disk": "ssd"});
    }
    if g.chance(0.15) {
        spec["os"] = json!({"name": g.pick(&["windows", "linux"])});
    }

    let mut metadata = json!({"name": format!("pod-{}", g.up_to(999)), "namespace": namespace});
    if g.chance(0.5) {
        let mut labels = json!({"app": "demo"});
        if g.chance(0.2) {
            labels[POD_IDENTITY_LABEL] = g.pick(&["enabled", "other"]).into();
        }
        metadata["labels"] = labels;
    }
    let mut annotations = serde_json::Map::new();
    if g.chance(0.2) {
        annotations.insert(
            format!("{prefix}/token-expiration"),
            g.pick(EXPIRATIONS).into(),
        );
    }
    if g.chance(0.35) {
        let value = skip_containers(g, &names);
        annotations.insert(format!("{prefix}/skip-containers"), value.into());
    }
    if g.chance(0.1) {
        annotations.insert(
            format!("{other_prefix}/skip-containers"),
            names.join(",").into(),
        );
    }
    if !annotations.is_empty() || g.chance(0.1) {
        annotations.insert("note".into(), "unrelated".into());
        metadata["annotations"] = annotations.into();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// A skip-containers value: container names and others, plain, padded, quoted, now and then
/// malformed for CSV, sometimes over several lines.
fn skip_containers(g: &mut Gen, names: &[String]) -> String {
    let pick_name = |g: &mut Gen| {
        if g.chance(0.8) {
            g.pick(names)
        } else {
            g.pick(&["nope", ""]).to_string()
        }
    };
    let mut fields = Vec::new();
    for _ in 0..1 + g.up_to(2) {
        let name = pick_name(g);
        fields.push(match g.up_to(11) {
            0..=4 => name,
            5 => format!(" {name} "),
            6 => format!("\t{name}"),
            7 => format!("\"{name}\""),
            8 => format!("\" {name}\t\""),
            9 => format!("\"{name}, {}\"", pick_name(g)),
            10 => format!("\"{name}\"\"x\""),
            _ => g.pick(&[
                format!("{name}\"x"),
                format!("\"{name}"),
                format!("\"{name}\"x"),
                format!(" \"{name}\""),
            ]),
        });
    }
    let mut value = fields.join(",");
    if g.chance(0.1) {
        value.insert_str(0, g.pick(&["\n", "\r\n", " \n"]));
    }
    if g.chance(0.15) {
        value.push_str(g.pick(&["\n", "\r\n", "\r"]));
        value.push_str(&pick_name(g));
    }
    value
}
