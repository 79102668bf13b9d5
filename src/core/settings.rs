//! What the operator configured for every pod: the mutation flags, resolved once at startup.
//! Both the server and the offline `mutate` command build one of these and hand it to the engine.

/// Shortest token lifetime the API server accepts for a projected token, in seconds.
pub(crate) const MIN_TOKEN_EXPIRATION: i64 = 600;
/// Default token lifetime, in seconds (one day), as the reference webhook.
pub(crate) const DEFAULT_TOKEN_EXPIRATION: i64 = 86400;

// The reference webhook's defaults, used by the command line and by `Default` alike.
pub(crate) const DEFAULT_ANNOTATION_PREFIX: &str = "eks.amazonaws.com";
pub(crate) const DEFAULT_TOKEN_AUDIENCE: &str = "sts.amazonaws.com";
pub(crate) const DEFAULT_TOKEN_MOUNT_PATH: &str =
    "/var/run/secrets/eks.amazonaws.com/serviceaccount";
pub(crate) const DEFAULT_CC_AUDIENCE: &str = "pods.eks.amazonaws.com";
pub(crate) const DEFAULT_CC_MOUNT_PATH: &str =
    "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";
pub(crate) const DEFAULT_CC_VOLUME_NAME: &str = "eks-pod-identity-token";
pub(crate) const DEFAULT_CC_TOKEN_PATH: &str = "eks-pod-identity-token";
pub(crate) const DEFAULT_CC_FULL_URI: &str = "http://169.254.170.23/v1/credentials";

/// The annotation keys read from ServiceAccounts and pods, built once from `--annotation-prefix`
/// so the hot path never formats strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationKeys {
    pub role_arn: String,
    pub audience: String,
    pub sts_regional_endpoints: String,
    pub token_expiration: String,
    pub skip_containers: String,
    /// ServiceAccount: `AWS_ROLE_SESSION_NAME` from the pod's name (not in the reference).
    pub role_session_name_from_pod: String,
    /// ServiceAccount: the region injected, or `none` (not in the reference).
    pub region: String,
    /// Pod: roles of named containers (not in the reference).
    pub container_role_arns: String,
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
            role_session_name_from_pod: key("role-session-name-from-pod"),
            region: key("region"),
            container_role_arns: key("container-role-arns"),
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
            audience: DEFAULT_CC_AUDIENCE.into(),
            mount_path: DEFAULT_CC_MOUNT_PATH.into(),
            volume_name: DEFAULT_CC_VOLUME_NAME.into(),
            token_path: DEFAULT_CC_TOKEN_PATH.into(),
            full_uri: DEFAULT_CC_FULL_URI.into(),
        }
    }
}

/// Everything the engine needs besides the pod and its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutationSettings {
    pub keys: AnnotationKeys,
    pub token_audience: String,
    pub token_mount_path: String,
    /// Already raised to [`MIN_TOKEN_EXPIRATION`] when lower.
    pub token_expiration: i64,
    pub aws_default_region: Option<String>,
    pub sts_regional_endpoint: bool,
    /// Default of the ServiceAccount annotation `role-session-name-from-pod`.
    pub role_session_name_from_pod: bool,
    /// Pods whose ServiceAccount has no role still get the region (when one is resolved).
    pub inject_region_without_role: bool,
    pub container_credentials: ContainerCredentialsSettings,
}

impl Default for MutationSettings {
    fn default() -> Self {
        Self::with_prefix(DEFAULT_ANNOTATION_PREFIX)
    }
}

impl MutationSettings {
    /// Reference defaults with another annotation prefix.
    pub(crate) fn with_prefix(prefix: &str) -> Self {
        Self {
            keys: AnnotationKeys::new(prefix),
            token_audience: DEFAULT_TOKEN_AUDIENCE.into(),
            token_mount_path: DEFAULT_TOKEN_MOUNT_PATH.into(),
            token_expiration: DEFAULT_TOKEN_EXPIRATION,
            aws_default_region: None,
            sts_regional_endpoint: false,
            role_session_name_from_pod: false,
            inject_region_without_role: false,
            container_credentials: ContainerCredentialsSettings::default(),
        }
    }
}

/// Raises a token lifetime to the minimum the API server accepts; there is no upper clamp.
pub(crate) fn clamp_expiration(seconds: i64) -> i64 {
    seconds.max(MIN_TOKEN_EXPIRATION)
}
