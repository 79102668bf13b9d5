//! The trust-policy table: each case pins a verdict and the words that explain it.

use serde_json::{json, Value};

use super::*;
use crate::irsa::policy;

const ISS: &str = "https://oidc.example.com/cluster-1";
const PROVIDER: &str = "oidc.example.com/cluster-1";
const PROVIDER_ARN: &str = "arn:aws:iam::111122223333:oidc-provider/oidc.example.com/cluster-1";
const AUD: &str = "sts.amazonaws.com";
/// The role being assumed in most cases.
const ROLE: &str = "arn:aws:iam::111122223333:role/app";
/// The token's subject in most cases: ServiceAccount app in namespace team-a.
const SUB: &str = "system:serviceaccount:team-a:app";

fn statement(effect: &str, principal: &str, conditions: Value) -> Value {
    json!({"Effect": effect, "Principal": {"Federated": principal},
           "Action": "sts:AssumeRoleWithWebIdentity", "Condition": conditions})
}

/// A condition block testing this provider's `sub` key with one operator.
fn sub_condition(op: &str, value: &str) -> Value {
    json!({op: {format!("{PROVIDER}:sub"): value}})
}

fn allow(sub_op: &str, sub: Value) -> Value {
    let mut conditions = json!({"StringEquals": {format!("{PROVIDER}:aud"): AUD}});
    conditions[sub_op][format!("{PROVIDER}:sub")] = sub;
    statement("Allow", PROVIDER_ARN, conditions)
}

/// One Allow statement whose sub condition is `StringEquals` to `allowed`.
fn allow_sub(allowed: &str) -> Value {
    allow("StringEquals", json!(allowed))
}

fn eval_with(statements: Vec<Value>, iss: &str, sub: &str, aud: &[&str]) -> Evaluation {
    eval_as(statements, iss, sub, aud, Some(ROLE))
}

/// The evaluation for a token assuming `role` (None: the role is not known).
fn eval_as(
    statements: Vec<Value>,
    iss: &str,
    sub: &str,
    aud: &[&str],
    role: Option<&str>,
) -> Evaluation {
    let document = json!({"Version": "2012-10-17", "Statement": statements});
    let policy = policy::parse(&document.to_string()).unwrap();
    let aud: Vec<String> = aud.iter().map(|a| a.to_string()).collect();
    evaluate(
        &policy,
        &WebIdentityRequest {
            iss,
            sub,
            aud: &aud,
            role: role.and_then(RoleHome::of),
        },
    )
}

fn eval(statements: Vec<Value>, sub: &str) -> Evaluation {
    eval_with(statements, ISS, sub, &[AUD])
}

/// The single problem's message and fix.
fn only_problem(evaluation: &Evaluation) -> (String, String) {
    let problems = evaluation.problems();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    (problems[0].message.clone(), problems[0].fix.clone())
}

/// The single problem of an evaluation that must end in an implicit deny (no statement applies).
fn implicit_deny_problem(evaluation: &Evaluation) -> (String, String) {
    assert_eq!(evaluation.verdict, Verdict::ImplicitDeny);
    only_problem(evaluation)
}

#[test]
fn correct_policy_allows() {
    let e = eval(vec![allow_sub(SUB)], SUB);
    assert_eq!(e.verdict, Verdict::Allowed(1));
    assert_eq!(
        e.summary(),
        "statement 1 allows sts:AssumeRoleWithWebIdentity with this token"
    );
    assert!(e.problems().is_empty());
}

#[test]
fn wrong_namespace_is_named() {
    let e = eval(vec![allow_sub(SUB)], "system:serviceaccount:team-b:app");
    let (message, fix) = implicit_deny_problem(&e);
    assert_eq!(
        message,
        "statement 1: the policy allows sub system:serviceaccount:team-a:app, this pod's token says \
         system:serviceaccount:team-b:app (wrong namespace: the policy expects team-a, the pod runs in team-b)"
    );
    assert!(fix.contains("system:serviceaccount:team-b:app"), "{fix}");
}

#[test]
fn wrong_name_is_named() {
    let e = eval(vec![allow_sub("system:serviceaccount:team-a:ap")], SUB);
    let (message, _) = implicit_deny_problem(&e);
    assert!(
        message.ends_with("(wrong ServiceAccount name: the policy expects ap, the pod uses app)"),
        "{message}"
    );
}

#[test]
fn wrong_audience_is_named_with_both_values() {
    let e = eval_with(vec![allow_sub(SUB)], ISS, SUB, &["custom.example.com"]);
    let (message, fix) = implicit_deny_problem(&e);
    assert_eq!(
        message,
        "statement 1: the policy allows aud sts.amazonaws.com, this pod's token says custom.example.com"
    );
    assert!(fix.contains("audience annotation"), "{fix}");
}

#[test]
fn https_in_the_condition_key_makes_the_key_absent() {
    let e = eval(
        vec![statement(
            "Allow",
            PROVIDER_ARN,
            json!({"StringEquals": {format!("https://{PROVIDER}:sub"): SUB}}),
        )],
        SUB,
    );
    let (message, fix) = implicit_deny_problem(&e);
    assert!(
        message.contains("names provider https://oidc.example.com/cluster-1")
            && message
                .contains("the policy includes the scheme; IAM names providers without https://"),
        "{message}"
    );
    assert_eq!(fix, format!("write the key as \"{PROVIDER}:sub\""));
}

#[test]
fn https_in_the_provider_arn_does_not_match() {
    let e = eval(
        vec![statement(
            "Allow",
            &format!("arn:aws:iam::111122223333:oidc-provider/{ISS}"),
            sub_condition("StringEquals", SUB),
        )],
        SUB,
    );
    let (message, fix) = implicit_deny_problem(&e);
    assert_eq!(
        message,
        format!("statement 1: the policy trusts provider {ISS}, this token's issuer {ISS} is provider {PROVIDER} \
                 (the policy includes the scheme; IAM names providers without https://)")
    );
    assert!(fix.contains(PROVIDER_ARN), "{fix}");
}

#[test]
fn trailing_slash_in_the_issuer_is_a_different_provider() {
    let e = eval_with(vec![allow_sub(SUB)], &format!("{ISS}/"), SUB, &[AUD]);
    assert_eq!(e.verdict, Verdict::ImplicitDeny);
    let problems = e.problems();
    // The principal and both condition keys name the provider without the slash.
    assert_eq!(problems.len(), 3, "{problems:#?}");
    for problem in &problems {
        assert!(
            problem.message.contains("trailing slash"),
            "{}",
            problem.message
        );
    }
    assert!(problems[0]
        .message
        .contains(&format!("provider {PROVIDER}/")));
}

#[test]
fn wildcard_under_string_equals_is_literal() {
    let e = eval(vec![allow_sub("system:serviceaccount:team-a:*")], SUB);
    let (message, fix) = implicit_deny_problem(&e);
    assert!(
        message.contains("StringEquals compares literally, so * and ? in system:serviceaccount:team-a:* are not wildcards"),
        "{message}"
    );
    assert_eq!(
        fix,
        format!("use StringLike instead of StringEquals for {PROVIDER}:sub")
    );
}

#[test]
fn string_like_wildcard_matches() {
    for pattern in [
        "system:serviceaccount:team-a:*",
        "system:serviceaccount:team-?:app",
        "*",
    ] {
        let e = eval(vec![allow("StringLike", json!(pattern))], SUB);
        assert_eq!(e.verdict, Verdict::Allowed(1), "{pattern}");
    }
    let e = eval(
        vec![allow("StringLike", json!("system:serviceaccount:team-b:*"))],
        SUB,
    );
    let (message, _) = only_problem(&e);
    assert!(
        message.contains("wrong namespace: the policy expects team-b, the pod runs in team-a"),
        "{message}"
    );
}

#[test]
fn several_statements_any_allow_is_enough() {
    let e = eval(
        vec![
            allow_sub("system:serviceaccount:other:app"),
            allow("StringEquals", json!(["system:serviceaccount:x:y", SUB])),
        ],
        SUB,
    );
    assert_eq!(e.verdict, Verdict::Allowed(2));
    assert!(!e.statements[0].applies);
    assert!(e.statements[1].applies);

    let e = eval(
        vec![
            allow_sub("system:serviceaccount:other:app"),
            allow_sub("system:serviceaccount:team-a:other"),
        ],
        SUB,
    );
    assert_eq!(e.verdict, Verdict::ImplicitDeny);
    let problems = e.problems();
    assert_eq!(problems.len(), 2);
    assert!(problems[0].message.starts_with("statement 1: "));
    assert!(problems[1].message.starts_with("statement 2: "));
}

#[test]
fn deny_wins_over_allow() {
    let e = eval(
        vec![
            allow_sub(SUB),
            statement(
                "Deny",
                PROVIDER_ARN,
                sub_condition("StringLike", "system:serviceaccount:team-a:*"),
            ),
        ],
        SUB,
    );
    assert_eq!(e.verdict, Verdict::ExplicitDeny(2));
    assert_eq!(
        e.summary(),
        "statement 2 (Deny) matches this token, and a Deny wins over every Allow"
    );
    let (message, fix) = only_problem(&e);
    assert_eq!(
        message,
        "statement 2 denies sts:AssumeRoleWithWebIdentity for this token"
    );
    assert!(fix.contains("remove statement 2"), "{fix}");
    // A Deny that does not match leaves the Allow in force.
    let e = eval(
        vec![
            allow_sub(SUB),
            statement(
                "Deny",
                PROVIDER_ARN,
                sub_condition("StringEquals", "system:serviceaccount:team-b:app"),
            ),
        ],
        SUB,
    );
    assert_eq!(e.verdict, Verdict::Allowed(1));
}

#[test]
fn condition_key_without_the_issuer_prefix_is_absent() {
    let e = eval(
        vec![statement(
            "Allow",
            PROVIDER_ARN,
            json!({"StringEquals": {"sub": SUB}}),
        )],
        SUB,
    );
    let (message, fix) = only_problem(&e);
    assert!(message.contains("lacks the issuer prefix"), "{message}");
    assert_eq!(fix, format!("write the key as \"{PROVIDER}:sub\""));
}

#[test]
fn condition_keys_are_case_insensitive() {
    let e = eval(
        vec![statement(
            "Allow",
            PROVIDER_ARN,
            json!({"StringEquals": {"OIDC.example.com/cluster-1:SUB": SUB}}),
        )],
        SUB,
    );
    assert_eq!(e.verdict, Verdict::Allowed(1));
}

#[test]
fn negated_and_set_operators_follow_iam() {
    let with = |conditions: Value| eval(vec![statement("Allow", PROVIDER_ARN, conditions)], SUB);
    let key = format!("{PROVIDER}:sub");
    let aud = format!("{PROVIDER}:aud");
    // StringNotEquals on another value holds; on this one it fails with the words.
    assert!(with(json!({"StringNotEquals": {&key: "system:serviceaccount:x:y"}})).allowed());
    let e = with(json!({"StringNotLike": {&key: "system:serviceaccount:team-a:*"}}));
    let (message, _) = only_problem(&e);
    assert!(
        message.contains("the policy refuses sub system:serviceaccount:team-a:* (StringNotLike)"),
        "{message}"
    );
    // Set operators on aud.
    assert!(with(json!({"ForAnyValue:StringEquals": {&aud: ["x", AUD]}})).allowed());
    assert!(with(json!({"ForAllValues:StringEquals": {&aud: [AUD]}})).allowed());
    assert!(!with(json!({"ForAllValues:StringEquals": {&aud: ["x"]}})).allowed());
    assert!(!with(json!({"ForAnyValue:StringLike": {&aud: ["x*"]}})).allowed());
    // Missing keys: ForAllValues holds, ForAnyValue and plain positive fail, IfExists holds,
    // a negated operator holds.
    let missing = format!("{PROVIDER}:amr");
    assert!(with(json!({"ForAllValues:StringEquals": {&missing: "x"}})).allowed());
    assert!(!with(json!({"ForAnyValue:StringEquals": {&missing: "x"}})).allowed());
    assert!(!with(json!({"StringEquals": {&missing: "x"}})).allowed());
    assert!(with(json!({"StringEqualsIfExists": {&missing: "x"}})).allowed());
    assert!(with(json!({"StringNotEquals": {&missing: "x"}})).allowed());
    assert!(with(json!({"Null": {&missing: "true", &key: "false"}})).allowed());
    assert!(!with(json!({"Null": {&key: "true"}})).allowed());
    assert!(with(json!({"StringEqualsIgnoreCase": {&key: SUB.to_uppercase()}})).allowed());
    // Keys that depend on the request are noted, not evaluated.
    let e = with(json!({"StringEquals": {"aws:RequestTag/team": "a", &key: SUB}}));
    assert!(e.allowed());
    assert_eq!(e.notes.len(), 1, "{:?}", e.notes);
}

#[test]
fn unknown_operator_action_and_principal_kind_are_reported() {
    let e = eval(
        vec![statement(
            "Allow",
            PROVIDER_ARN,
            sub_condition("StringEqual", SUB),
        )],
        SUB,
    );
    assert!(only_problem(&e)
        .0
        .contains("\"StringEqual\" is not one IAM accepts"));
    let mut wrong_action = allow_sub(SUB);
    wrong_action["Action"] = json!("sts:AssumeRole");
    let (message, fix) = only_problem(&eval(vec![wrong_action], SUB));
    assert!(
        message.contains("does not include sts:AssumeRoleWithWebIdentity"),
        "{message}"
    );
    assert_eq!(fix, "set \"Action\": \"sts:AssumeRoleWithWebIdentity\"");
    let mut wildcard_action = allow_sub(SUB);
    wildcard_action["Action"] = json!(["sts:*"]);
    assert!(eval(vec![wildcard_action], SUB).allowed());
    let mut aws_principal = allow_sub(SUB);
    aws_principal["Principal"] = json!({"AWS": "arn:aws:iam::111122223333:root"});
    assert!(only_problem(&eval(vec![aws_principal], SUB))
        .0
        .contains("not an OIDC provider"));
}

#[test]
fn provider_in_another_account_is_named() {
    let e = eval(
        vec![statement(
            "Allow",
            &format!("arn:aws:iam::999999999999:oidc-provider/{PROVIDER}"),
            sub_condition("StringEquals", SUB),
        )],
        SUB,
    );
    assert!(only_problem(&e)
        .0
        .contains("account 999999999999, the role in account 111122223333"));
}

/// IAM looks the provider up in the role's own partition and account: a principal elsewhere
/// never matches, whatever its name.
#[rstest::rstest]
#[case::same_partition_and_account("aws", "111122223333", ROLE, None)]
#[case::china_provider_for_a_commercial_role(
    "aws-cn",
    "111122223333",
    ROLE,
    Some("the provider ARN is in partition aws-cn, the role in partition aws;")
)]
#[case::govcloud_provider_for_a_china_role(
    "aws-us-gov",
    "111122223333",
    "arn:aws-cn:iam::111122223333:role/app",
    Some("the provider ARN is in partition aws-us-gov, the role in partition aws-cn;")
)]
#[case::commercial_provider_for_a_govcloud_role(
    "aws",
    "111122223333",
    "arn:aws-us-gov:iam::111122223333:role/path/app",
    Some("the provider ARN is in partition aws, the role in partition aws-us-gov;")
)]
#[case::other_partition_and_account(
    "aws-cn",
    "999999999999",
    ROLE,
    Some("the provider ARN is in partition aws-cn and account 999999999999, the role in partition aws and account 111122223333;")
)]
#[case::china_provider_for_a_china_role(
    "aws-cn",
    "111122223333",
    "arn:aws-cn:iam::111122223333:role/app",
    None
)]
fn provider_in_another_partition_never_matches(
    #[case] provider_partition: &str,
    #[case] provider_account: &str,
    #[case] role: &str,
    #[case] refused: Option<&str>,
) {
    let principal =
        format!("arn:{provider_partition}:iam::{provider_account}:oidc-provider/{PROVIDER}");
    let e = eval_as(
        vec![statement(
            "Allow",
            &principal,
            sub_condition("StringEquals", SUB),
        )],
        ISS,
        SUB,
        &[AUD],
        Some(role),
    );
    match refused {
        None => assert_eq!(e.verdict, Verdict::Allowed(1), "{:#?}", e.problems()),
        Some(words) => {
            let (message, fix) = implicit_deny_problem(&e);
            assert!(message.contains(words), "{message}");
            assert!(
                message.ends_with("so this principal never matches"),
                "{message}"
            );
            // The fix names the provider where the role is.
            let home = RoleHome::of(role).unwrap();
            assert_eq!(
                fix,
                format!(
                    "set \"Principal\": {{\"Federated\": \"arn:{}:iam::{}:oidc-provider/{PROVIDER}\"}}",
                    home.partition, home.account
                )
            );
        }
    }
}

#[test]
fn without_a_known_role_any_partition_and_account_match_and_the_fix_says_so() {
    for role in [
        None,
        Some("my-role"),
        Some("arn:aws:iam::111122223333:user/app"),
    ] {
        let e = eval_as(
            vec![statement(
                "Allow",
                &format!("arn:aws-cn:iam::999999999999:oidc-provider/{PROVIDER}"),
                sub_condition("StringEquals", SUB),
            )],
            ISS,
            SUB,
            &[AUD],
            role,
        );
        assert!(e.allowed(), "{role:?}: {:#?}", e.problems());
    }
    let e = eval_as(
        vec![statement(
            "Allow",
            "arn:aws:iam::111122223333:oidc-provider/other.example.com",
            sub_condition("StringEquals", SUB),
        )],
        ISS,
        SUB,
        &[AUD],
        None,
    );
    let (_, fix) = implicit_deny_problem(&e);
    assert_eq!(
        fix,
        format!("set \"Principal\": {{\"Federated\": \"arn:aws:iam::<account>:oidc-provider/{PROVIDER}\"}} (the partition may be aws-cn or aws-us-gov)")
    );
}

#[test]
fn glob_handles_stars_and_question_marks() {
    for (pattern, text, expected) in [
        ("*", "", true),
        ("a*", "abc", true),
        ("*c", "abc", true),
        ("a*c", "ac", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("abc", "abcd", false),
        ("**", "x", true),
    ] {
        assert_eq!(glob(pattern, text), expected, "{pattern} vs {text}");
    }
}
