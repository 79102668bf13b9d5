//! What the operator configured for every pod: the mutation flags, resolved once at startup.
//! Both the server and the offline `mutate` command build one of these and hand it to the engine.

/// Shortest token lifetime the API server accepts for a projected token, in seconds.
pub const MIN_TOKEN_EXPIRATION: i64 = 600;
/// Default token lifetime, in seconds (one day), as the reference webhook.
pub const DEFAULT_TOKEN_EXPIRATION: i64 = 86400;

/// The annotation keys read from ServiceAccounts and pods, built once from `--annotation-prefix`
/// so the hot path never formats strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationKeys {
    pub role_arn: String,
    pub audience: String,
    pub sts_regional_endpoints: String,
    pub token_expiration: String,
    pub skip_containers: String,
}

impl AnnotationKeys {
    pub fn new(prefix: &str) -> Self {
        let key = |name: &str| format!("{prefix}/{name}");
        Self {
            role_arn: key("role-arn"),
            audience: key("audience"),
            sts_regional_endpoints: key("sts-regional-endpoints"),
            token_expiration: key("token-expiration"),
            skip_containers: key("skip-containers"),
        }
    }
}

/// Settings of the EKS Pod Identity (container credentials) mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCredentialsSettings {
    pub audience: String,
    pub mount_path: String,
    pub volume_name: String,
    pub token_path: String,
    pub full_uri: String,
}

impl Default for ContainerCredentialsSettings {
    fn default() -> Self {
        Self {
            audience: "pods.eks.amazonaws.com".into(),
            mount_path: "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount".into(),
            volume_name: "eks-pod-identity-token".into(),
            token_path: "eks-pod-identity-token".into(),
            full_uri: "http://169.254.170.23/v1/credentials".into(),
        }
    }
}

/// Everything the engine needs besides the pod and its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutationSettings {
    pub annotation_prefix: String,
    pub keys: AnnotationKeys,
    pub token_audience: String,
    pub token_mount_path: String,
    /// Already raised to [`MIN_TOKEN_EXPIRATION`] when lower.
    pub token_expiration: i64,
    pub aws_default_region: Option<String>,
    pub sts_regional_endpoint: bool,
    pub container_credentials: ContainerCredentialsSettings,
}

impl Default for MutationSettings {
    fn default() -> Self {
        Self::with_prefix("eks.amazonaws.com")
    }
}

impl MutationSettings {
    /// Reference defaults with another annotation prefix.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            annotation_prefix: prefix.to_string(),
            keys: AnnotationKeys::new(prefix),
            token_audience: "sts.amazonaws.com".into(),
            token_mount_path: "/var/run/secrets/eks.amazonaws.com/serviceaccount".into(),
            token_expiration: DEFAULT_TOKEN_EXPIRATION,
            aws_default_region: None,
            sts_regional_endpoint: false,
            container_credentials: ContainerCredentialsSettings::default(),
        }
    }
}

/// Raises a token lifetime to the minimum the API server accepts; there is no upper clamp.
pub fn clamp_expiration(seconds: i64) -> i64 {
    seconds.max(MIN_TOKEN_EXPIRATION)
}
