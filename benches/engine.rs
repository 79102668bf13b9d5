//! The mutation engine on a small pod and a large one (20 containers with 50 env entries
//! each), from parsed pod JSON to patch operations, plus the same with JSON parsing and patch
//! serialization included, which is what the server pays per request.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pod_identity_webhook::core::decision::mutate_with_inputs;
use pod_identity_webhook::core::identity::{IdentityInputs, ServiceAccountAnnotations};
use pod_identity_webhook::core::settings::MutationSettings;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::hint::black_box;

fn pod(containers: usize, env_per_container: usize) -> Value {
    let containers: Vec<Value> = (0..containers)
        .map(|c| {
            let env: Vec<Value> = (0..env_per_container)
                .map(|e| json!({"name": format!("VAR_{e}"), "value": format!("value-{c}-{e}")}))
                .collect();
            json!({
                "name": format!("container-{c}"),
                "image": "registry.example/app:1.2.3",
                "env": env,
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bench", "namespace": "default", "labels": {"app": "bench"}},
        "spec": {
            "serviceAccountName": "app",
            "containers": containers,
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    })
}

fn bench_engine(c: &mut Criterion) {
    let settings = MutationSettings {
        aws_default_region: Some("eu-west-1".into()),
        sts_regional_endpoint: true,
        ..Default::default()
    };
    let annotations: BTreeMap<String, String> = [(
        "eks.amazonaws.com/role-arn".to_string(),
        "arn:aws:iam::111122223333:role/app".to_string(),
    )]
    .into();
    let service_account = ServiceAccountAnnotations::from_annotations(&annotations, &settings.keys);
    let sources = IdentityInputs {
        service_account: Some(&service_account),
        ..Default::default()
    };
    let mut group = c.benchmark_group("engine");
    for (label, pod) in [("small", pod(1, 2)), ("large_20x50", pod(20, 50))] {
        let bytes = serde_json::to_vec(&pod).unwrap();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("mutate", label), &pod, |b, pod| {
            b.iter(|| {
                let outcome = mutate_with_inputs(
                    black_box(pod),
                    "default",
                    "app",
                    sources,
                    &settings,
                    &mut |r| *r.start(),
                )
                .unwrap();
                black_box(outcome)
            })
        });
        group.bench_with_input(
            BenchmarkId::new("parse_mutate_serialize", label),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let pod: Value = serde_json::from_slice(black_box(bytes)).unwrap();
                    let outcome =
                        mutate_with_inputs(&pod, "default", "app", sources, &settings, &mut |r| {
                            *r.start()
                        })
                        .unwrap();
                    black_box(serde_json::to_vec(&outcome.mutation.patch).unwrap())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
