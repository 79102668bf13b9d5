//! The service-account issuer URL as IAM sees it: the token's `iss`, the OIDC provider's URL,
//! and the provider name (`host/path`, no scheme) used in principal ARNs and condition keys.

use std::fmt;

/// Where a cluster's public OIDC documents are served from, relative to the issuer.
pub(crate) const DISCOVERY_PATH: &str = ".well-known/openid-configuration";
/// Where the JWKS is served, the same path the API server uses.
pub(crate) const JWKS_PATH: &str = "openid/v1/jwks";

/// An issuer URL that IAM can register: `https://host[:port][/path]`, kept exactly as given
/// (a trailing slash matters to IAM, so it is neither added nor removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("issuer URL {value:?} {problem}")]
pub struct IssuerError {
    pub value: String,
    pub problem: String,
}

impl Issuer {
    /// Checks the shape IAM requires of an OIDC provider URL.
    pub fn parse(value: &str) -> Result<Self, IssuerError> {
        let fail = |problem: &str| IssuerError {
            value: value.to_string(),
            problem: problem.to_string(),
        };
        let Some(rest) = value.strip_prefix("https://") else {
            return Err(fail(
                "does not start with https://; IAM accepts only https issuers (e.g. https://oidc.example.com/cluster)",
            ));
        };
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("contains whitespace; remove it"));
        }
        if value.contains(['?', '#']) {
            return Err(fail(
                "has a query or fragment; an issuer is https://host[/path] only",
            ));
        }
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            return Err(fail("has no host; give https://host[/path]"));
        }
        if host.contains('@') {
            return Err(fail("carries user information; give https://host[/path]"));
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The provider name IAM derives from the URL: the URL without `https://`. It is what
    /// follows `oidc-provider/` in the provider ARN and precedes `:sub` and `:aud`.
    pub(crate) fn provider_name(&self) -> &str {
        self.0.strip_prefix("https://").unwrap_or(&self.0)
    }

    /// The URL of a document under the issuer (`base/relative`, one slash between).
    pub fn join(&self, relative: &str) -> String {
        format!("{}/{}", self.0.trim_end_matches('/'), relative)
    }

    pub fn jwks_uri(&self) -> String {
        self.join(JWKS_PATH)
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Says in words how two issuer strings differ (they must be equal byte for byte for IAM), or
/// `None` when they are equal. `expected` is what the reader configured, `actual` what the
/// other side has.
pub(crate) fn describe_difference(expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let strip_scheme = |s: &str| {
        s.strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s)
            .to_string()
    };
    let detail = if expected.trim_end_matches('/') == actual.trim_end_matches('/') {
        if expected.ends_with('/') {
            "they differ only by the trailing slash, which IAM does not ignore: one has it, the other does not"
        } else {
            "they differ only by a trailing slash, which IAM does not ignore"
        }
    } else if strip_scheme(expected) == strip_scheme(actual) {
        "they differ in the scheme: both must be https://"
    } else if expected.eq_ignore_ascii_case(actual) {
        "they differ in letter case, which IAM does not ignore"
    } else if strip_scheme(expected).trim_end_matches('/')
        == strip_scheme(actual).trim_end_matches('/')
    {
        "they differ in the scheme and the trailing slash"
    } else {
        "they are different URLs"
    };
    Some(format!("{expected:?} vs {actual:?}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_name_drops_only_the_scheme_and_keeps_a_trailing_slash() {
        let issuer = Issuer::parse("https://oidc.example.com/cluster-1").unwrap();
        assert_eq!(issuer.provider_name(), "oidc.example.com/cluster-1");
        assert_eq!(
            issuer.jwks_uri(),
            "https://oidc.example.com/cluster-1/openid/v1/jwks"
        );
        let slash = Issuer::parse("https://oidc.example.com/").unwrap();
        assert_eq!(slash.provider_name(), "oidc.example.com/");
        assert_eq!(
            slash.join(DISCOVERY_PATH),
            "https://oidc.example.com/.well-known/openid-configuration"
        );
    }

    #[test]
    fn non_https_and_malformed_issuers_are_refused_with_the_reason() {
        for (value, words) in [
            ("http://oidc.example.com", "https"),
            ("oidc.example.com", "https"),
            ("https://", "no host"),
            ("https:///path", "no host"),
            ("https://a.example.com/x?y=1", "query"),
            ("https://user@a.example.com", "user information"),
            ("https://a.example.com/ x", "whitespace"),
        ] {
            let err = Issuer::parse(value).unwrap_err().to_string();
            assert!(err.contains(words), "{value}: {err}");
            assert!(err.contains(&format!("{value:?}")), "{err}");
        }
    }

    #[test]
    fn differences_are_named() {
        assert_eq!(describe_difference("https://a", "https://a"), None);
        let slash = describe_difference("https://a/", "https://a").unwrap();
        assert!(slash.contains("trailing slash"), "{slash}");
        let scheme = describe_difference("https://a", "http://a").unwrap();
        assert!(scheme.contains("scheme"), "{scheme}");
        let case = describe_difference("https://A", "https://a").unwrap();
        assert!(case.contains("letter case"), "{case}");
        let other = describe_difference("https://a", "https://b").unwrap();
        assert!(other.contains("different URLs"), "{other}");
    }
}
