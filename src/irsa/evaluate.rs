//! Evaluates a trust policy against a web-identity token the way IAM does for
//! `sts:AssumeRoleWithWebIdentity`: principal, action and conditions per statement, an
//! explicit Deny over any Allow, no Allow meaning deny. Every mismatch is said in words with
//! its fix, because "Not authorized" is all STS itself says.

use serde::Serialize;

use crate::core::identity::{is_iam_role_arn, split_iam_arn, IamArn};

use super::policy::{
    ActionSpec, Condition, Effect, PrincipalSpec, Principals, Statement, TrustPolicy,
};

pub(crate) const ACTION: &str = "sts:AssumeRoleWithWebIdentity";

/// What IAM learns from the token (and the role) when the pod's SDK calls STS.
#[derive(Clone, Debug)]
pub(crate) struct WebIdentityRequest<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a [String],
    /// Where the role being assumed lives, when known: the provider must be there too.
    pub role: Option<RoleHome<'a>>,
}

/// The partition and account of a role. IAM looks the token's OIDC provider up in the role's own
/// account, so a Federated principal of another partition or account never matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoleHome<'a> {
    pub partition: &'a str,
    pub account: &'a str,
}

impl<'a> RoleHome<'a> {
    /// From a role ARN; None when `role_arn` is not one (then nothing is known of its home).
    pub(crate) fn of(role_arn: &'a str) -> Option<Self> {
        if !is_iam_role_arn(role_arn) {
            return None;
        }
        split_iam_arn(role_arn).map(|arn| Self {
            partition: arn.partition,
            account: arn.account,
        })
    }
}

impl WebIdentityRequest<'_> {
    /// The provider name IAM looks up for this token: `iss` without `https://`.
    pub(crate) fn provider_name(&self) -> &str {
        self.iss.strip_prefix("https://").unwrap_or(self.iss)
    }
}

/// One reason a statement does not apply, with what to change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Mismatch {
    pub message: String,
    pub fix: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct StatementOutcome {
    /// 1-based, as people count statements.
    pub number: usize,
    pub sid: Option<String>,
    pub effect: Effect,
    pub applies: bool,
    pub mismatches: Vec<Mismatch>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "statement")]
pub enum Verdict {
    /// This statement (1-based) allows the call, and no Deny applies.
    Allowed(usize),
    /// This Deny statement applies; it wins over every Allow.
    ExplicitDeny(usize),
    /// No statement allows the call.
    ImplicitDeny,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Evaluation {
    pub verdict: Verdict,
    pub statements: Vec<StatementOutcome>,
    /// Things that were not evaluated (keys that depend on the request, not the token).
    pub notes: Vec<String>,
}

impl Evaluation {
    pub fn allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Allowed(_))
    }

    /// One line for the verdict.
    pub fn summary(&self) -> String {
        match self.verdict {
            Verdict::Allowed(n) => format!("statement {n} allows {ACTION} with this token"),
            Verdict::ExplicitDeny(n) => {
                format!("statement {n} (Deny) matches this token, and a Deny wins over every Allow")
            }
            Verdict::ImplicitDeny if !self.statements.iter().any(|s| s.effect == Effect::Allow) => {
                "the policy has no Allow statement, so nothing allows this token".into()
            }
            Verdict::ImplicitDeny => "no statement allows this token".into(),
        }
    }

    /// Why the call is refused: for a Deny, the Deny itself; otherwise each Allow statement's
    /// mismatches, prefixed with its number.
    pub fn problems(&self) -> Vec<Mismatch> {
        match self.verdict {
            Verdict::Allowed(_) => Vec::new(),
            Verdict::ExplicitDeny(n) => vec![Mismatch {
                message: format!("statement {n} denies {ACTION} for this token"),
                fix: format!("remove statement {n} or narrow its conditions so it does not match this ServiceAccount"),
            }],
            Verdict::ImplicitDeny => {
                let mut problems = Vec::new();
                for outcome in self.statements.iter().filter(|s| s.effect == Effect::Allow) {
                    for mismatch in &outcome.mismatches {
                        problems.push(Mismatch {
                            message: format!("statement {}: {}", outcome.number, mismatch.message),
                            fix: mismatch.fix.clone(),
                        });
                    }
                }
                if problems.is_empty() {
                    problems.push(Mismatch {
                        message: "the policy has no Allow statement".into(),
                        fix: format!("add a statement allowing {ACTION} for the cluster's OIDC provider (pod-identity-webhook trust-policy prints one)"),
                    });
                }
                problems
            }
        }
    }
}

/// Evaluates every statement; Deny first, then Allow.
pub(crate) fn evaluate(policy: &TrustPolicy, request: &WebIdentityRequest<'_>) -> Evaluation {
    let mut notes = Vec::new();
    let statements: Vec<StatementOutcome> = policy
        .statements
        .iter()
        .enumerate()
        .map(|(i, statement)| {
            let mismatches = statement_mismatches(statement, request, &mut notes);
            StatementOutcome {
                number: i + 1,
                sid: statement.sid.clone(),
                effect: statement.effect,
                applies: mismatches.is_empty(),
                mismatches,
            }
        })
        .collect();
    let applying = |effect| {
        statements
            .iter()
            .find(|s| s.applies && s.effect == effect)
            .map(|s| s.number)
    };
    let verdict = match (applying(Effect::Deny), applying(Effect::Allow)) {
        (Some(deny), _) => Verdict::ExplicitDeny(deny),
        (None, Some(allow)) => Verdict::Allowed(allow),
        (None, None) => Verdict::ImplicitDeny,
    };
    notes.dedup();
    Evaluation {
        verdict,
        statements,
        notes,
    }
}

fn statement_mismatches(
    statement: &Statement,
    request: &WebIdentityRequest<'_>,
    notes: &mut Vec<String>,
) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    match &statement.action {
        ActionSpec::Action(patterns) => {
            if !patterns
                .iter()
                .any(|p| glob(&p.to_ascii_lowercase(), &ACTION.to_ascii_lowercase()))
            {
                mismatches.push(Mismatch {
                    message: format!(
                        "the statement's Action is {} and does not include {ACTION}",
                        patterns.join(", ")
                    ),
                    fix: format!("set \"Action\": \"{ACTION}\""),
                });
            }
        }
        ActionSpec::NotAction(patterns) => {
            if patterns
                .iter()
                .any(|p| glob(&p.to_ascii_lowercase(), &ACTION.to_ascii_lowercase()))
            {
                mismatches.push(Mismatch {
                    message: format!(
                        "the statement's NotAction {} excludes {ACTION}",
                        patterns.join(", ")
                    ),
                    fix: format!("use \"Action\": \"{ACTION}\" instead of NotAction"),
                });
            }
        }
    }
    if let Some(mismatch) = principal_mismatch(&statement.principal, request) {
        mismatches.push(mismatch);
    }
    for condition in &statement.conditions {
        if let Some(mismatch) = condition_mismatch(condition, request, notes) {
            mismatches.push(mismatch);
        }
    }
    mismatches
}

// ------------------------------------------------------------------------------ principal

fn principal_mismatch(spec: &PrincipalSpec, request: &WebIdentityRequest<'_>) -> Option<Mismatch> {
    let provider = request.provider_name();
    let (partition, account) = request
        .role
        .map_or(("aws", "<account>"), |role| (role.partition, role.account));
    let expected = format!("arn:{partition}:iam::{account}:oidc-provider/{provider}");
    // Without the role, its partition is a guess.
    let partition_hint = if request.role.is_none() {
        " (the partition may be aws-cn or aws-us-gov)"
    } else {
        ""
    };
    let (principals, negated) = match spec {
        PrincipalSpec::Principal(p) => (p, false),
        PrincipalSpec::NotPrincipal(p) => (p, true),
    };
    let listed = match principals {
        Principals::Any => {
            return negated.then(|| Mismatch {
                message: "the statement's NotPrincipal is \"*\", which excludes every caller"
                    .into(),
                fix: format!("use \"Principal\": {{\"Federated\": \"{expected}\"}}"),
            })
        }
        Principals::Listed(listed) => listed,
    };
    let judged: Vec<(&str, Result<(), String>)> = listed
        .iter()
        .map(|(kind, value)| (value.as_str(), federated_matches(kind, value, request)))
        .collect();
    let matched = judged.iter().any(|(_, result)| result.is_ok());
    if negated {
        return matched.then(|| Mismatch {
            message: format!("the statement's NotPrincipal names this token's provider {provider}"),
            fix: "remove the provider from NotPrincipal, or use Principal".into(),
        });
    }
    if matched {
        return None;
    }
    let reasons: Vec<String> = judged
        .into_iter()
        .filter_map(|(_, result)| result.err())
        .collect();
    Some(Mismatch {
        message: if reasons.is_empty() {
            format!("the statement's Principal names no Federated OIDC provider; this token's provider is {provider}")
        } else {
            reasons.join("; ")
        },
        fix: format!("set \"Principal\": {{\"Federated\": \"{expected}\"}}{partition_hint}"),
    })
}

/// Whether one principal entry is the provider of this token; Err says how it differs.
fn federated_matches(
    kind: &str,
    value: &str,
    request: &WebIdentityRequest<'_>,
) -> Result<(), String> {
    let provider = request.provider_name();
    if kind != "Federated" {
        return Err(format!(
            "the principal {kind}: {value} is not an OIDC provider (web identities match only Federated principals)"
        ));
    }
    let Some(IamArn {
        partition,
        account,
        resource,
    }) = split_iam_arn(value)
    else {
        return Err(format!(
            "the Federated principal {value:?} is not an OIDC provider ARN (arn:aws:iam::<account>:oidc-provider/{provider})"
        ));
    };
    let Some(name) = resource.strip_prefix("oidc-provider/") else {
        return Err(format!(
            "the Federated principal {value} is not an oidc-provider ARN"
        ));
    };
    if name != provider {
        let why = provider_difference(name, provider);
        return Err(format!(
            "the policy trusts provider {name}, this token's issuer {} is provider {provider}{why}",
            request.iss
        ));
    }
    let Some(role) = request.role else {
        return Ok(());
    };
    let mut elsewhere = Vec::new();
    if partition != role.partition {
        elsewhere.push(("partition", partition, role.partition));
    }
    if account != role.account {
        elsewhere.push(("account", account, role.account));
    }
    if elsewhere.is_empty() {
        return Ok(());
    }
    let provider_in: Vec<String> = elsewhere
        .iter()
        .map(|(what, p, _)| format!("{what} {p}"))
        .collect();
    let role_in: Vec<String> = elsewhere
        .iter()
        .map(|(what, _, r)| format!("{what} {r}"))
        .collect();
    Err(format!(
        "the provider ARN is in {}, the role in {}; IAM looks the provider up in the role's own partition and account, so this principal never matches",
        provider_in.join(" and "),
        role_in.join(" and ")
    ))
}

/// Why two provider names differ, for the common slips.
fn provider_difference(written: &str, actual: &str) -> String {
    if let Some(rest) = written
        .strip_prefix("https://")
        .or_else(|| written.strip_prefix("http://"))
    {
        if rest == actual {
            return " (the policy includes the scheme; IAM names providers without https://)"
                .into();
        }
    }
    if written.trim_end_matches('/') == actual.trim_end_matches('/') {
        return " (they differ only by a trailing slash, which IAM does not ignore)".into();
    }
    if written.eq_ignore_ascii_case(actual) {
        return " (they differ in letter case)".into();
    }
    String::new()
}

// ----------------------------------------------------------------------------- conditions

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    Equals,
    EqualsIgnoreCase,
    Like,
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetQualifier {
    None,
    ForAnyValue,
    ForAllValues,
}

struct Operator {
    base: Base,
    negated: bool,
    if_exists: bool,
    set: SetQualifier,
}

fn parse_operator(name: &str) -> Option<Operator> {
    let (set, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
        (SetQualifier::ForAnyValue, rest)
    } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
        (SetQualifier::ForAllValues, rest)
    } else {
        (SetQualifier::None, name)
    };
    let (rest, if_exists) = match rest.strip_suffix("IfExists") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let (base, negated) = match rest {
        "StringEquals" => (Base::Equals, false),
        "StringNotEquals" => (Base::Equals, true),
        "StringEqualsIgnoreCase" => (Base::EqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (Base::EqualsIgnoreCase, true),
        "StringLike" => (Base::Like, false),
        "StringNotLike" => (Base::Like, true),
        "Null" if !if_exists && set == SetQualifier::None => (Base::Null, false),
        _ => return None,
    };
    Some(Operator {
        base,
        negated,
        if_exists,
        set,
    })
}

/// Which claim a condition key names, or why it names none this token provides.
enum KeyLookup<'a> {
    Claim {
        name: &'static str,
        values: &'a [String],
    },
    Absent {
        why: Option<String>,
    },
    RequestDependent,
}

fn lookup<'a>(key: &str, request: &'a WebIdentityRequest<'a>, sub: &'a [String]) -> KeyLookup<'a> {
    let provider = request.provider_name();
    let lower = key.to_ascii_lowercase();
    if lower.starts_with("aws:") || lower.starts_with("sts:") {
        return KeyLookup::RequestDependent;
    }
    for (name, values) in [("sub", sub), ("aud", request.aud)] {
        let suffix = format!(":{name}");
        if lower == format!("{}{suffix}", provider.to_ascii_lowercase()) {
            return KeyLookup::Claim { name, values };
        }
        if lower == name {
            return KeyLookup::Absent {
                why: Some(format!(
                    "the condition key {key:?} lacks the issuer prefix; IAM knows this claim only as \"{provider}:{name}\", so the key is absent"
                )),
            };
        }
        if let Some(prefix) = key
            .strip_suffix(&suffix)
            .or_else(|| (lower.ends_with(&suffix)).then(|| &key[..key.len() - suffix.len()]))
        {
            let why = provider_difference(prefix, provider);
            return KeyLookup::Absent {
                why: Some(format!(
                    "the condition key {key:?} names provider {prefix}, but this token's provider is {provider}{why}; IAM has no such key, so it is absent"
                )),
            };
        }
    }
    KeyLookup::Absent { why: None }
}

fn matches_value(base: Base, actual: &str, pattern: &str) -> bool {
    match base {
        Base::Equals => actual == pattern,
        Base::EqualsIgnoreCase => actual.eq_ignore_ascii_case(pattern),
        Base::Like => glob(pattern, actual),
        Base::Null => false,
    }
}

/// Whether the condition holds, following IAM: a missing key fails positive operators and
/// passes negated ones (and `...IfExists`); `ForAllValues` holds on a missing key and
/// `ForAnyValue` fails on one.
fn holds(op: &Operator, values: Option<&[String]>, patterns: &[String]) -> bool {
    if op.base == Base::Null {
        let want_absent = patterns.iter().any(|p| p.eq_ignore_ascii_case("true"));
        return values.is_none_or(<[String]>::is_empty) == want_absent;
    }
    let values = match values {
        Some(values) if !values.is_empty() => values,
        _ => {
            return match op.set {
                SetQualifier::ForAllValues => true,
                _ => op.if_exists || (op.negated && op.set == SetQualifier::None),
            }
        }
    };
    let one = |value: &String| {
        let any = patterns.iter().any(|p| matches_value(op.base, value, p));
        if op.negated {
            !any
        } else {
            any
        }
    };
    match op.set {
        SetQualifier::ForAllValues => values.iter().all(one),
        SetQualifier::ForAnyValue => values.iter().any(one),
        // Without a qualifier a negated operator must hold for every value, a positive one
        // for any.
        SetQualifier::None if op.negated => values.iter().all(one),
        SetQualifier::None => values.iter().any(one),
    }
}

fn condition_mismatch(
    condition: &Condition,
    request: &WebIdentityRequest<'_>,
    notes: &mut Vec<String>,
) -> Option<Mismatch> {
    let Condition {
        operator,
        key,
        values: patterns,
    } = condition;
    let Some(op) = parse_operator(operator) else {
        return Some(Mismatch {
            message: format!("the condition operator {operator:?} is not one IAM accepts for these keys, so IAM rejects the document"),
            fix: "use StringEquals, StringLike, their Not and IfExists forms, ForAnyValue:/ForAllValues: on aud, or Null".into(),
        });
    };
    let sub = [request.sub.to_string()];
    let looked_up = lookup(key, request, &sub);
    let (claim, values, why_absent) = match looked_up {
        KeyLookup::RequestDependent => {
            notes.push(format!(
                "condition {operator} on {key} depends on the STS request, not the token; not evaluated"
            ));
            return None;
        }
        KeyLookup::Claim { name, values } => (Some(name), Some(values), None),
        KeyLookup::Absent { why } => (None, None, why),
    };
    if holds(&op, values, patterns) {
        return None;
    }
    let shown = patterns.join(", ");
    let provider = request.provider_name();
    let Some(claim) = claim else {
        let message = why_absent.unwrap_or_else(|| {
            format!("the condition {operator} on {key:?} needs a key this token does not provide")
        });
        let fix = match key.rsplit(':').next() {
            Some(name @ ("sub" | "aud")) => format!("write the key as \"{provider}:{name}\""),
            _ => format!("remove the condition on {key:?} or make it ...IfExists"),
        };
        return Some(Mismatch { message, fix });
    };
    let actual = values.unwrap_or_default();
    let actual_text = if actual.is_empty() {
        "nothing".to_string()
    } else {
        actual.join(", ")
    };
    let full_key = format!("{provider}:{claim}");
    if op.negated {
        return Some(Mismatch {
            message: format!("the policy refuses {claim} {shown} ({operator}), and this pod's token says {actual_text}"),
            fix: format!("remove or change the {operator} condition on {full_key}"),
        });
    }
    let mut message =
        format!("the policy allows {claim} {shown}, this pod's token says {actual_text}");
    let mut fix = match claim {
        "sub" => format!(
            "set the {operator} value for {full_key} to {actual_text}, or run the pod under the ServiceAccount the policy names"
        ),
        _ => format!(
            "make them agree: set the {operator} value for {full_key} to {actual_text}, or set the ServiceAccount's audience annotation (or --token-audience) to {shown}; IRSA uses sts.amazonaws.com"
        ),
    };
    if claim == "sub" {
        if let Some(detail) = subject_detail(patterns, request.sub, op.base == Base::Like) {
            message.push_str(&format!(" ({detail})"));
        }
    }
    let literal_wildcards = op.base != Base::Like
        && patterns.iter().any(|p| p.contains(['*', '?']))
        && actual.iter().any(|v| patterns.iter().any(|p| glob(p, v)));
    if literal_wildcards {
        message.push_str(&format!(
            "; {operator} compares literally, so * and ? in {shown} are not wildcards"
        ));
        fix = format!("use StringLike instead of {operator} for {full_key}");
    }
    Some(Mismatch { message, fix })
}

/// For a subject mismatch, which part differs: namespace or name.
fn subject_detail(patterns: &[String], actual: &str, like: bool) -> Option<String> {
    const PREFIX: &str = "system:serviceaccount:";
    let (namespace, name) = actual.strip_prefix(PREFIX)?.split_once(':')?;
    let mut details = Vec::new();
    for pattern in patterns {
        let Some((p_ns, p_name)) = pattern.strip_prefix(PREFIX).and_then(|r| r.split_once(':'))
        else {
            details.push(format!(
                "{pattern:?} is not of the form system:serviceaccount:<namespace>:<name>"
            ));
            continue;
        };
        let same = |p: &str, a: &str| if like { glob(p, a) } else { p == a };
        match (same(p_ns, namespace), same(p_name, name)) {
            (false, true) => details.push(format!(
                "wrong namespace: the policy expects {p_ns}, the pod runs in {namespace}"
            )),
            (true, false) => details.push(format!(
                "wrong ServiceAccount name: the policy expects {p_name}, the pod uses {name}"
            )),
            (false, false) => details.push(format!(
                "both differ: the policy expects {p_ns}/{p_name}, the pod is {namespace}/{name}"
            )),
            (true, true) => {}
        }
    }
    (!details.is_empty()).then(|| details.join("; "))
}

/// IAM's StringLike matching: `*` any run of characters (possibly empty), `?` one character.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
