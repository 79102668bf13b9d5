//! The certificates themselves, with no I/O: what the Secret holds, whether it is still good
//! for this Service at a given time, and how to make new ones. Keys are ECDSA P-256.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Secret key of the trust bundle: the signing CA first, then earlier CAs still trusted.
pub(crate) const CA_CERT_KEY: &str = "ca.crt";
/// Secret key of the signing CA's private key, kept so any replica can re-issue under it.
pub(crate) const CA_KEY_KEY: &str = "ca.key";
/// Secret key of the serving certificate (the `kubernetes.io/tls` convention).
pub(crate) const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key of the serving certificate's private key.
pub(crate) const TLS_KEY_KEY: &str = "tls.key";

/// How much earlier than "now" a new certificate starts, so that replicas and the API server
/// with slightly different clocks all consider it valid: an hour, or a tenth of the lifetime
/// when that is shorter.
const MAX_BACKDATE_SECONDS: i64 = 3600;
/// A certificate whose notBefore is up to this far in the future is still accepted.
const CLOCK_SKEW_SECONDS: i64 = 300;

/// What certificates to make and how long they live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The serving certificate's DNS names: `<service>`, `<service>.<ns>`, `<service>.<ns>.svc`
    /// and `<service>.<ns>.svc.cluster.local`.
    pub dns_names: Vec<String>,
    pub ca_validity: Duration,
    pub serving_validity: Duration,
}

impl Policy {
    pub fn for_service(
        service: &str,
        namespace: &str,
        ca_validity: Duration,
        serving_validity: Duration,
    ) -> Self {
        Self {
            dns_names: vec![
                service.to_string(),
                format!("{service}.{namespace}"),
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
            ],
            ca_validity,
            serving_validity,
        }
    }

    /// The name the API server dials: `<service>.<ns>.svc`.
    fn serving_common_name(&self) -> &str {
        self.dns_names
            .get(2)
            .or_else(|| self.dns_names.first())
            .map_or("pod-identity-webhook", String::as_str)
    }
}

/// The PEM documents found in the Secret; each is `None` when missing, empty or not UTF-8.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoredPems {
    pub ca_bundle: Option<String>,
    pub ca_key: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl fmt::Debug for StoredPems {
    /// Never prints key material, only whether it is there.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPems")
            .field("ca_bundle", &self.ca_bundle.is_some())
            .field("ca_key", &self.ca_key.as_ref().map(|_| "<redacted>"))
            .field("cert", &self.cert.is_some())
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl StoredPems {
    pub fn from_data(data: Option<&BTreeMap<String, ByteString>>) -> Self {
        let text = |key: &str| {
            data.and_then(|data| data.get(key))
                .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
                .filter(|text| !text.trim().is_empty())
        };
        Self {
            ca_bundle: text(CA_CERT_KEY),
            ca_key: text(CA_KEY_KEY),
            cert: text(TLS_CERT_KEY),
            key: text(TLS_KEY_KEY),
        }
    }
}

/// A complete set of certificates, checked or freshly made.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateSet {
    /// PEM: the signing CA, then earlier CAs that serving certificates still in use may chain
    /// to. Published as the webhook's caBundle.
    pub ca_bundle: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

impl fmt::Debug for CertificateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateSet")
            .field("ca_bundle", &self.ca_bundle)
            .field("ca_key", &"<redacted>")
            .field("cert", &self.cert)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CertificateSet {
    /// The set as Secret data (the four keys).
    pub(crate) fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            (CA_CERT_KEY, &self.ca_bundle),
            (CA_KEY_KEY, &self.ca_key),
            (TLS_CERT_KEY, &self.cert),
            (TLS_KEY_KEY, &self.key),
        ]
        .into_iter()
        .map(|(key, pem)| (key.to_string(), ByteString(pem.as_bytes().to_vec())))
        .collect()
    }

    fn from_stored(stored: &StoredPems) -> Option<Self> {
        Some(Self {
            ca_bundle: stored.ca_bundle.clone()?,
            ca_key: stored.ca_key.clone()?,
            cert: stored.cert.clone()?,
            key: stored.key.clone()?,
        })
    }

    /// DER of the CA that signed the serving certificate (the bundle's first).
    #[cfg(test)]
    pub(crate) fn signing_ca_der(&self) -> Option<Vec<u8>> {
        pem_certs(&self.ca_bundle)
            .ok()?
            .into_iter()
            .next()
            .map(|der| der.to_vec())
    }

    /// The serving certificate's notAfter, as Unix seconds.
    pub(crate) fn serving_not_after(&self) -> Option<i64> {
        let ders = pem_certs(&self.cert).ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(ders.first()?).ok()?;
        Some(cert.validity().not_after.timestamp())
    }
}

/// What to do with what the Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything is valid for this Service and not yet due for renewal.
    Keep(CertificateSet),
    /// The CA is good; issue a new serving certificate under it. Says why.
    Reissue(String),
    /// Make a new CA (and serving certificate). Says why.
    NewCa(String),
}

/// Judges the stored certificates at `now` (Unix seconds). A certificate is due for renewal
/// when less than a third of its lifetime remains.
pub fn assess(stored: &StoredPems, policy: &Policy, now: i64) -> Verdict {
    let ca_ders = match stored.ca_bundle.as_deref().map(pem_certs) {
        None => return Verdict::NewCa(format!("{CA_CERT_KEY} is missing")),
        Some(Err(problem)) => return Verdict::NewCa(format!("{CA_CERT_KEY}: {problem}")),
        Some(Ok(ders)) => ders,
    };
    let ca = match x509_parser::parse_x509_certificate(&ca_ders[0]) {
        Ok((_, ca)) => ca,
        Err(err) => {
            return Verdict::NewCa(format!(
                "{CA_CERT_KEY}: first certificate does not parse: {err}"
            ))
        }
    };
    if let Some(problem) = ca_problem(&ca, stored.ca_key.as_deref(), now) {
        return Verdict::NewCa(problem);
    }
    if let Some(problem) = serving_problem(&ca, stored, policy, now) {
        return Verdict::Reissue(problem);
    }
    match CertificateSet::from_stored(stored) {
        Some(set) => Verdict::Keep(set),
        None => Verdict::Reissue("incomplete".into()),
    }
}

fn ca_problem(ca: &X509Certificate<'_>, ca_key: Option<&str>, now: i64) -> Option<String> {
    if !ca.is_ca() {
        return Some(format!(
            "{CA_CERT_KEY}: first certificate is not a CA (no basicConstraints CA:TRUE)"
        ));
    }
    if let Some(problem) = validity_problem(ca, now, CA_CERT_KEY) {
        return Some(problem);
    }
    let Some(ca_key) = ca_key else {
        return Some(format!("{CA_KEY_KEY} is missing"));
    };
    let key = match KeyPair::from_pem(ca_key) {
        Ok(key) => key,
        Err(err) => {
            return Some(format!(
                "{CA_KEY_KEY} is not a usable PKCS#8 private key: {err}"
            ))
        }
    };
    if !key_matches(ca, &key) {
        return Some(format!(
            "{CA_KEY_KEY} does not belong to the CA in {CA_CERT_KEY}"
        ));
    }
    renewal_due(ca, now, "the CA")
}

fn serving_problem(
    ca: &X509Certificate<'_>,
    stored: &StoredPems,
    policy: &Policy,
    now: i64,
) -> Option<String> {
    let Some(cert_pem) = stored.cert.as_deref() else {
        return Some(format!("{TLS_CERT_KEY} is missing"));
    };
    let ders = match pem_certs(cert_pem) {
        Ok(ders) => ders,
        Err(problem) => return Some(format!("{TLS_CERT_KEY}: {problem}")),
    };
    let cert = match x509_parser::parse_x509_certificate(&ders[0]) {
        Ok((_, cert)) => cert,
        Err(err) => return Some(format!("{TLS_CERT_KEY} does not parse: {err}")),
    };
    let Some(key_pem) = stored.key.as_deref() else {
        return Some(format!("{TLS_KEY_KEY} is missing"));
    };
    let key = match KeyPair::from_pem(key_pem) {
        Ok(key) => key,
        Err(err) => {
            return Some(format!(
                "{TLS_KEY_KEY} is not a usable PKCS#8 private key: {err}"
            ))
        }
    };
    if !key_matches(&cert, &key) {
        return Some(format!("{TLS_KEY_KEY} does not belong to {TLS_CERT_KEY}"));
    }
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Some(format!(
            "{TLS_CERT_KEY} is not signed by the CA in {CA_CERT_KEY}"
        ));
    }
    let names = dns_names(&cert);
    let missing: Vec<&str> = policy
        .dns_names
        .iter()
        .map(String::as_str)
        .filter(|wanted| !names.iter().any(|name| name.eq_ignore_ascii_case(wanted)))
        .collect();
    if !missing.is_empty() {
        return Some(format!("{TLS_CERT_KEY} lacks the DNS names {missing:?}"));
    }
    if let Some(problem) = validity_problem(&cert, now, TLS_CERT_KEY) {
        return Some(problem);
    }
    renewal_due(&cert, now, "the serving certificate")
}

fn validity_problem(cert: &X509Certificate<'_>, now: i64, what: &str) -> Option<String> {
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    if now + CLOCK_SKEW_SECONDS < not_before {
        Some(format!(
            "{what} is not valid before {}",
            rfc3339(not_before)
        ))
    } else if now >= not_after {
        Some(format!("{what} expired at {}", rfc3339(not_after)))
    } else {
        None
    }
}

/// Due when less than a third of the certificate's lifetime remains.
fn renewal_due(cert: &X509Certificate<'_>, now: i64, what: &str) -> Option<String> {
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    let lifetime = not_after - not_before;
    (not_after - now < lifetime / 3).then(|| {
        format!(
            "{what} expires at {}, less than a third of its lifetime away",
            rfc3339(not_after)
        )
    })
}

fn key_matches(cert: &X509Certificate<'_>, key: &KeyPair) -> bool {
    cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

fn dns_names<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    match cert.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(name) => Some(*name),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The CERTIFICATE blocks of a PEM document; an error when there is none or one is broken.
pub(crate) fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("not valid PEM: {err}"))?;
    if ders.is_empty() {
        return Err("holds no CERTIFICATE block".into());
    }
    Ok(ders)
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Certificate generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot generate a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the stored CA cannot sign: {0}")]
    UnusableCa(String),
    #[error("validity period out of range: {0}")]
    Time(#[from] time::error::ComponentRange),
}

/// Makes what `verdict` asks for. CPU-bound (key generation): call it off the async threads.
/// `Keep` returns the stored set unchanged.
pub fn renew(
    stored: &StoredPems,
    verdict: &Verdict,
    policy: &Policy,
    now: i64,
) -> Result<CertificateSet, GenerateError> {
    match verdict {
        Verdict::Keep(set) => Ok(set.clone()),
        Verdict::NewCa(_) => {
            let ca_window = window(now, policy.ca_validity);
            let (ca_pem, ca_key) = new_ca(policy, ca_window)?;
            let retained = still_trusted(stored.ca_bundle.as_deref(), now, &ca_pem);
            issue_under(&ca_pem, ca_key, retained, policy, now)
        }
        Verdict::Reissue(_) => {
            let ca_bundle = stored.ca_bundle.as_deref().unwrap_or_default();
            let ders = pem_certs(ca_bundle).map_err(GenerateError::UnusableCa)?;
            let ca_pem = pem_encode(&ders[0]);
            let ca_key = KeyPair::from_pem(stored.ca_key.as_deref().unwrap_or_default())?;
            let retained = still_trusted(Some(ca_bundle), now, &ca_pem);
            issue_under(&ca_pem, ca_key, retained, policy, now)
        }
    }
}

/// A fresh CA and serving certificate with explicit validity windows (Unix seconds), for
/// tests that need certificates at a given point of their life.
#[cfg(test)]
pub(crate) fn generate_with_windows(
    policy: &Policy,
    ca_window: (i64, i64),
    serving_window: (i64, i64),
) -> Result<CertificateSet, GenerateError> {
    let (ca_pem, ca_key) = new_ca(policy, ca_window)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let (cert, key) = serving(policy, &issuer, serving_window)?;
    Ok(CertificateSet {
        ca_bundle: ca_pem,
        ca_key: issuer.key().serialize_pem(),
        cert,
        key,
    })
}

fn window(now: i64, validity: Duration) -> (i64, i64) {
    let seconds = i64::try_from(validity.as_secs()).unwrap_or(i64::MAX / 4);
    let backdate = MAX_BACKDATE_SECONDS.min(seconds / 10);
    (now - backdate, now + seconds)
}

fn new_ca(
    policy: &Policy,
    (not_before, not_after): (i64, i64),
) -> Result<(String, KeyPair), GenerateError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    // Unique per CA, as Kubernetes' own self-signed CAs are named, so rotations are visible.
    name.push(
        DnType::CommonName,
        format!("{}-ca@{not_before}", policy.serving_common_name()),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key))
}

fn serving(
    policy: &Policy,
    issuer: &Issuer<'_, KeyPair>,
    (not_before, not_after): (i64, i64),
) -> Result<(String, String), GenerateError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(policy.dns_names.clone())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, policy.serving_common_name());
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after)?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate under the CA `ca_pem`/`ca_key`; it never outlives the CA.
fn issue_under(
    ca_pem: &str,
    ca_key: KeyPair,
    retained: Vec<String>,
    policy: &Policy,
    now: i64,
) -> Result<CertificateSet, GenerateError> {
    let ca_not_after = pem_certs(ca_pem)
        .ok()
        .and_then(|ders| {
            x509_parser::parse_x509_certificate(&ders[0])
                .ok()
                .map(|(_, ca)| ca.validity().not_after.timestamp())
        })
        .ok_or_else(|| GenerateError::UnusableCa(format!("{CA_CERT_KEY} does not parse")))?;
    let (not_before, not_after) = window(now, policy.serving_validity);
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)?;
    let (cert, key) = serving(policy, &issuer, (not_before, not_after.min(ca_not_after)))?;
    let mut ca_bundle = ca_pem.to_string();
    for pem in retained {
        ca_bundle.push_str(&pem);
    }
    Ok(CertificateSet {
        ca_bundle,
        ca_key: issuer.key().serialize_pem(),
        cert,
        key,
    })
}

/// The CAs of `bundle` still worth trusting next to `signing_pem`: parseable, CAs, not
/// expired. Serving certificates other replicas still use may chain to them, so a new CA is
/// published alongside them, never instead of them.
fn still_trusted(bundle: Option<&str>, now: i64, signing_pem: &str) -> Vec<String> {
    let Some(Ok(ders)) = bundle.map(pem_certs) else {
        return Vec::new();
    };
    let signing = pem_certs(signing_pem).unwrap_or_default();
    let mut kept: Vec<CertificateDer<'static>> = Vec::new();
    for der in ders {
        let trusted = x509_parser::parse_x509_certificate(&der)
            .is_ok_and(|(_, cert)| cert.is_ca() && now < cert.validity().not_after.timestamp());
        if trusted && !signing.contains(&der) && !kept.contains(&der) {
            kept.push(der);
        }
    }
    kept.iter().map(pem_encode).collect()
}

fn pem_encode(der: &CertificateDer<'_>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn policy() -> Policy {
        Policy::for_service(
            "piw",
            "eks",
            Duration::from_secs(3650 * DAY as u64),
            Duration::from_secs(365 * DAY as u64),
        )
    }

    fn stored(set: &CertificateSet) -> StoredPems {
        StoredPems::from_data(Some(&set.to_data()))
    }

    /// A set in its prime: CA a year into ten, serving certificate a month into a year.
    fn healthy() -> CertificateSet {
        generate_with_windows(
            &policy(),
            (NOW - 365 * DAY, NOW + 9 * 365 * DAY),
            (NOW - 30 * DAY, NOW + 335 * DAY),
        )
        .unwrap()
    }

    fn fresh(stored: &StoredPems, verdict: &Verdict) -> CertificateSet {
        let set = renew(stored, verdict, &policy(), NOW).unwrap();
        match assess(&StoredPems::from_data(Some(&set.to_data())), &policy(), NOW) {
            Verdict::Keep(kept) => assert_eq!(kept, set),
            other => panic!("a renewed set must be kept, got {other:?}"),
        }
        set
    }

    fn first_ca(set: &CertificateSet) -> Vec<u8> {
        set.signing_ca_der().unwrap()
    }

    fn bundle_len(set: &CertificateSet) -> usize {
        pem_certs(&set.ca_bundle).unwrap().len()
    }

    #[test]
    fn an_empty_secret_gets_a_new_ca_and_a_certificate_for_every_service_name() {
        let empty = StoredPems::default();
        let verdict = assess(&empty, &policy(), NOW);
        assert_eq!(verdict, Verdict::NewCa("ca.crt is missing".into()));
        let set = fresh(&empty, &verdict);
        assert_eq!(bundle_len(&set), 1);
        let der = &pem_certs(&set.cert).unwrap()[0];
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        assert_eq!(
            dns_names(&cert),
            ["piw", "piw.eks", "piw.eks.svc", "piw.eks.svc.cluster.local"]
        );
        assert!(!cert.is_ca());
        let lifetime = cert.validity().not_after.timestamp() - NOW;
        assert_eq!(lifetime, 365 * DAY);
    }

    #[test]
    fn a_healthy_set_is_kept_as_is() {
        let set = healthy();
        assert_eq!(assess(&stored(&set), &policy(), NOW), Verdict::Keep(set));
    }

    #[test]
    fn a_serving_certificate_with_a_third_of_its_life_left_is_reissued_under_the_same_ca() {
        let set = generate_with_windows(
            &policy(),
            (NOW - 365 * DAY, NOW + 9 * 365 * DAY),
            (NOW - 250 * DAY, NOW + 115 * DAY),
        )
        .unwrap();
        let verdict = assess(&stored(&set), &policy(), NOW);
        let Verdict::Reissue(reason) = &verdict else {
            panic!("expected a re-issue, got {verdict:?}");
        };
        assert!(reason.contains("less than a third"), "{reason}");
        let renewed = fresh(&stored(&set), &verdict);
        assert_eq!(
            first_ca(&renewed),
            first_ca(&set),
            "same CA, so the caBundle stays"
        );
        assert_eq!(renewed.ca_key, set.ca_key);
        assert_ne!(renewed.cert, set.cert);
        assert_eq!(
            assess(&stored(&set), &policy(), NOW - 100 * DAY),
            Verdict::Keep(set)
        );
    }

    #[test]
    fn a_ca_near_its_end_is_replaced_and_kept_in_the_bundle_until_it_expires() {
        let old = generate_with_windows(
            &policy(),
            (NOW - 8 * 365 * DAY, NOW + 2 * 365 * DAY),
            (NOW - 30 * DAY, NOW + 335 * DAY),
        )
        .unwrap();
        let verdict = assess(&stored(&old), &policy(), NOW);
        assert!(
            matches!(&verdict, Verdict::NewCa(reason) if reason.contains("the CA expires")),
            "{verdict:?}"
        );
        let rotated = fresh(&stored(&old), &verdict);
        assert_ne!(first_ca(&rotated), first_ca(&old));
        let bundle = pem_certs(&rotated.ca_bundle).unwrap();
        assert_eq!(bundle.len(), 2, "new CA first, old CA still trusted");
        assert_eq!(bundle[1].as_ref(), first_ca(&old).as_slice());

        // Once the old CA has expired, the next renewal drops it from the bundle.
        let later = NOW + 2 * 365 * DAY + DAY;
        let verdict = Verdict::Reissue("test".into());
        let pruned = renew(&stored(&rotated), &verdict, &policy(), later).unwrap();
        assert_eq!(bundle_len(&pruned), 1);
        assert_eq!(first_ca(&pruned), first_ca(&rotated));
    }

    #[test]
    fn damaged_serving_parts_are_reissued_and_say_what_was_wrong() {
        let set = healthy();
        let other = healthy();
        let other_service = Policy::for_service(
            "other",
            "eks",
            policy().ca_validity,
            policy().serving_validity,
        );
        let wrong_names = generate_with_windows(
            &other_service,
            (NOW - DAY, NOW + 3650 * DAY),
            (NOW - DAY, NOW + 365 * DAY),
        )
        .unwrap();
        let cases = [
            (
                "tls.crt is missing",
                StoredPems {
                    cert: None,
                    ..stored(&set)
                },
            ),
            (
                "tls.crt: not valid PEM",
                StoredPems {
                    cert: Some(
                        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into(),
                    ),
                    ..stored(&set)
                },
            ),
            (
                "tls.crt: holds no CERTIFICATE block",
                StoredPems {
                    cert: Some("hello".into()),
                    ..stored(&set)
                },
            ),
            (
                "tls.key does not belong to tls.crt",
                StoredPems {
                    key: Some(other.key.clone()),
                    ..stored(&set)
                },
            ),
            (
                "tls.key is not a usable",
                StoredPems {
                    key: Some("junk".into()),
                    ..stored(&set)
                },
            ),
            (
                "not signed by the CA",
                StoredPems {
                    cert: Some(other.cert.clone()),
                    key: Some(other.key.clone()),
                    ..stored(&set)
                },
            ),
            (
                "lacks the DNS names",
                StoredPems {
                    cert: Some(wrong_names.cert.clone()),
                    key: Some(wrong_names.key.clone()),
                    ca_bundle: Some(wrong_names.ca_bundle.clone()),
                    ca_key: Some(wrong_names.ca_key.clone()),
                },
            ),
        ];
        for (expected, damaged) in cases {
            let verdict = assess(&damaged, &policy(), NOW);
            match &verdict {
                Verdict::Reissue(reason) => {
                    assert!(reason.contains(expected), "{expected}: {reason}")
                }
                other => panic!("{expected}: expected a re-issue, got {other:?}"),
            }
            fresh(&damaged, &verdict);
        }
    }

    #[test]
    fn an_expired_serving_certificate_is_reissued() {
        let set = healthy();
        let verdict = assess(&stored(&set), &policy(), NOW + 400 * DAY);
        assert!(
            matches!(&verdict, Verdict::Reissue(reason) if reason.contains("expired")),
            "{verdict:?}"
        );
    }

    #[test]
    fn damaged_ca_parts_get_a_new_ca() {
        let set = healthy();
        let other = healthy();
        let cases = [
            (
                "ca.crt is missing",
                StoredPems {
                    ca_bundle: None,
                    ..stored(&set)
                },
            ),
            (
                "ca.crt: holds no CERTIFICATE block",
                StoredPems {
                    ca_bundle: Some("x".into()),
                    ..stored(&set)
                },
            ),
            (
                "ca.key is missing",
                StoredPems {
                    ca_key: None,
                    ..stored(&set)
                },
            ),
            (
                "ca.key does not belong",
                StoredPems {
                    ca_key: Some(other.ca_key.clone()),
                    ..stored(&set)
                },
            ),
            (
                "not a CA",
                StoredPems {
                    ca_bundle: Some(set.cert.clone()),
                    ca_key: Some(set.key.clone()),
                    ..stored(&set)
                },
            ),
        ];
        for (expected, damaged) in cases {
            let verdict = assess(&damaged, &policy(), NOW);
            match &verdict {
                Verdict::NewCa(reason) => {
                    assert!(reason.contains(expected), "{expected}: {reason}")
                }
                other => panic!("{expected}: expected a new CA, got {other:?}"),
            }
            let renewed = fresh(&damaged, &verdict);
            assert_ne!(renewed.ca_key, set.ca_key);
        }
        let expired_ca = generate_with_windows(
            &policy(),
            (NOW - 20 * DAY, NOW - DAY),
            (NOW - 20 * DAY, NOW - DAY),
        )
        .unwrap();
        let verdict = assess(&stored(&expired_ca), &policy(), NOW);
        assert!(
            matches!(&verdict, Verdict::NewCa(reason) if reason.contains("expired")),
            "{verdict:?}"
        );
        assert_eq!(
            bundle_len(&fresh(&stored(&expired_ca), &verdict)),
            1,
            "an expired CA is not kept"
        );
    }

    #[test]
    fn secret_data_round_trips_and_debug_output_hides_private_keys() {
        let set = healthy();
        let data = set.to_data();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["ca.crt", "ca.key", "tls.crt", "tls.key"]
        );
        assert_eq!(
            assess(&StoredPems::from_data(Some(&data)), &policy(), NOW),
            Verdict::Keep(set.clone())
        );
        for debug in [format!("{set:?}"), format!("{:?}", stored(&set))] {
            assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        }
    }
}
