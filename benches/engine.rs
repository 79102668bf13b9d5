//! The decision on a small pod and a large one (20 containers with 50 env entries each): from
//! the pod already read to the patch, and from the pod's JSON text through the same reader the
//! server uses, which is what the server pays per request besides HTTP.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pod_identity_webhook::core::decision::decide;
use pod_identity_webhook::core::identity::{IdentityInputs, ServiceAccountAnnotations};
use pod_identity_webhook::core::pod::Pod;
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
        let text = serde_json::to_string(&pod).unwrap();
        group.throughput(Throughput::Elements(1));
        let read = Pod::from_value(&pod).unwrap();
        group.bench_function(BenchmarkId::new("decide", label), |b| {
            b.iter(|| {
                let decision = decide(black_box(&read), "default", sources, &settings, &mut |r| {
                    *r.start()
                });
                black_box(decision)
            })
        });
        group.bench_with_input(BenchmarkId::new("read_decide", label), &text, |b, text| {
            b.iter(|| {
                let pod = Pod::from_json(black_box(text)).unwrap();
                let decision = decide(&pod, "default", sources, &settings, &mut |r| *r.start());
                black_box(decision.patch.map(|patch| patch.as_bytes().len()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
