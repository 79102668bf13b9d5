//! The identity the engine's property tests inject: one fixed role and audience, so the
//! validity and the property suites exercise the same web identity.

use pod_identity_webhook::core::identity::CredentialKind;

/// Container credentials, or web identity for the test role with the STS audience.
pub fn credential_source(container_credentials: bool) -> CredentialKind {
    if container_credentials {
        CredentialKind::ContainerCredentials
    } else {
        CredentialKind::WebIdentity {
            role_arn: "arn:aws:iam::111122223333:role/r".into(),
            audience: "sts.amazonaws.com".into(),
        }
    }
}
