//! An IAM role trust policy as written by people: read from the document itself, from
//! `aws iam get-role` output, or from the URL-encoded form the IAM API returns, into
//! statements whose shorthand forms (a string or a list) are made uniform.

use serde_json::{Map, Value};

use crate::core::json::json_type;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Principal` or `NotPrincipal`: `"*"` or `{"Federated": ..., "AWS": ..., "Service": ...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principals {
    Any,
    /// (kind, value) pairs, e.g. ("Federated", "arn:aws:iam::1:oidc-provider/x").
    Listed(Vec<(String, String)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalSpec {
    Principal(Principals),
    NotPrincipal(Principals),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionSpec {
    Action(Vec<String>),
    NotAction(Vec<String>),
}

/// One `"Operator": {"key": values}` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub operator: String,
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principal: PrincipalSpec,
    pub action: ActionSpec,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustPolicy {
    pub statements: Vec<Statement>,
    /// The role's ARN, when the input was `aws iam get-role` output.
    pub role_arn: Option<String>,
}

/// Reads a trust policy from text: the policy JSON, `aws iam get-role` JSON (or YAML), or
/// the URL-encoded document.
pub fn parse(text: &str) -> Result<TrustPolicy, String> {
    let trimmed = text.trim();
    let decoded;
    let text = if trimmed.starts_with("%7B") || trimmed.starts_with("%7b") {
        decoded = percent_encoding::percent_decode_str(trimmed)
            .decode_utf8()
            .map_err(|err| format!("is URL-encoded but not UTF-8: {err}"))?
            .into_owned();
        decoded.as_str()
    } else {
        trimmed
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(json_err) => serde_yaml_ng::from_str(text).map_err(|_| {
            format!("is not JSON (or YAML): {json_err}; give the role's trust policy document or `aws iam get-role` output")
        })?,
    };
    let mut role_arn = None;
    let document = match value.get("Role") {
        Some(role) => {
            role_arn = role.get("Arn").and_then(Value::as_str).map(str::to_string);
            match role.get("AssumeRolePolicyDocument") {
                Some(Value::String(encoded)) => {
                    return parse(encoded).map(|policy| TrustPolicy { role_arn, ..policy })
                }
                Some(document) => document.clone(),
                None => return Err("has a Role without AssumeRolePolicyDocument; give `aws iam get-role --role-name NAME` output".into()),
            }
        }
        None => value,
    };
    let statements = match document.get("Statement") {
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, s)| statement(s).map_err(|e| format!("statement {}: {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?,
        Some(single @ Value::Object(_)) => {
            vec![statement(single).map_err(|e| format!("statement 1: {e}"))?]
        }
        Some(other) => {
            return Err(format!(
                "has Statement as {}, expected an object or a list of objects",
                json_type(other)
            ))
        }
        None => return Err("has no Statement; give the role's trust policy document".into()),
    };
    Ok(TrustPolicy {
        statements,
        role_arn,
    })
}

fn statement(value: &Value) -> Result<Statement, String> {
    let Value::Object(object) = value else {
        return Err(format!("is {}, expected an object", json_type(value)));
    };
    let effect = match object.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => {
            return Err(format!(
                "has Effect {other:?}; IAM accepts exactly \"Allow\" or \"Deny\""
            ))
        }
        None => return Err("has no Effect string; set \"Effect\": \"Allow\"".into()),
    };
    let principal = match (object.get("Principal"), object.get("NotPrincipal")) {
        (Some(p), None) => PrincipalSpec::Principal(principals(p)?),
        (None, Some(p)) => PrincipalSpec::NotPrincipal(principals(p)?),
        _ => {
            return Err(
                "needs exactly one of Principal and NotPrincipal; a trust policy names who may assume the role"
                    .into(),
            )
        }
    };
    let action = match (object.get("Action"), object.get("NotAction")) {
        (Some(a), None) => ActionSpec::Action(strings(a, "Action")?),
        (None, Some(a)) => ActionSpec::NotAction(strings(a, "NotAction")?),
        _ => return Err("needs exactly one of Action and NotAction".into()),
    };
    let conditions = match object.get("Condition") {
        None => Vec::new(),
        Some(Value::Object(operators)) => conditions(operators)?,
        Some(other) => {
            return Err(format!(
                "has Condition as {}, expected an object",
                json_type(other)
            ))
        }
    };
    Ok(Statement {
        sid: object
            .get("Sid")
            .and_then(Value::as_str)
            .map(str::to_string),
        effect,
        principal,
        action,
        conditions,
    })
}

fn principals(value: &Value) -> Result<Principals, String> {
    match value {
        Value::String(s) if s == "*" => Ok(Principals::Any),
        Value::Object(kinds) => {
            let mut listed = Vec::new();
            for (kind, values) in kinds {
                for value in strings(values, &format!("Principal.{kind}"))? {
                    listed.push((kind.clone(), value));
                }
            }
            Ok(Principals::Listed(listed))
        }
        other => Err(format!(
            "has Principal {other}, expected \"*\" or an object such as {{\"Federated\": \"arn:...\"}}"
        )),
    }
}

fn conditions(operators: &Map<String, Value>) -> Result<Vec<Condition>, String> {
    let mut out = Vec::new();
    for (operator, keys) in operators {
        let Value::Object(keys) = keys else {
            return Err(format!(
                "has Condition.{operator} as {}, expected an object of key: value(s)",
                json_type(keys)
            ));
        };
        for (key, values) in keys {
            out.push(Condition {
                operator: operator.clone(),
                key: key.clone(),
                values: strings(values, &format!("Condition.{operator}.{key}"))?,
            });
        }
    }
    Ok(out)
}

/// A string, number or boolean, or a list of them, as IAM accepts in these places.
fn strings(value: &Value, what: &str) -> Result<Vec<String>, String> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!(
            "has {what} containing {}, expected strings",
            json_type(other)
        )),
    };
    match value {
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Principal": {"Federated": "arn:aws:iam::111122223333:oidc-provider/oidc.example.com"},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {"oidc.example.com:sub": "system:serviceaccount:a:b",
                                       "oidc.example.com:aud": ["sts.amazonaws.com", true]}}}}"#;

    #[test]
    fn shorthand_forms_become_lists() {
        let policy = parse(DOC).unwrap();
        assert_eq!(policy.statements.len(), 1);
        let s = &policy.statements[0];
        assert_eq!(s.effect, Effect::Allow);
        assert_eq!(
            s.action,
            ActionSpec::Action(vec!["sts:AssumeRoleWithWebIdentity".into()])
        );
        assert_eq!(s.conditions.len(), 2);
        assert_eq!(s.conditions[1].values, vec!["sts.amazonaws.com", "true"]);
    }

    #[test]
    fn get_role_output_and_url_encoded_documents_are_read() {
        let get_role = format!(
            r#"{{"Role": {{"Arn": "arn:aws:iam::111122223333:role/app", "AssumeRolePolicyDocument": {DOC}}}}}"#
        );
        let policy = parse(&get_role).unwrap();
        assert_eq!(
            policy.role_arn.as_deref(),
            Some("arn:aws:iam::111122223333:role/app")
        );
        assert_eq!(policy.statements, parse(DOC).unwrap().statements);

        let encoded: String =
            percent_encoding::utf8_percent_encode(DOC, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        assert_eq!(
            parse(&encoded).unwrap().statements,
            parse(DOC).unwrap().statements
        );
        let nested = format!(
            r#"{{"Role": {{"Arn": "arn:aws:iam::111122223333:role/app", "AssumeRolePolicyDocument": "{encoded}"}}}}"#
        );
        let policy = parse(&nested).unwrap();
        assert_eq!(
            policy.role_arn.as_deref(),
            Some("arn:aws:iam::111122223333:role/app")
        );
        assert_eq!(policy.statements.len(), 1);
    }

    #[test]
    fn malformed_documents_say_where() {
        for (text, words) in [
            ("nope: [", "is not JSON"),
            (r#"{"Version": "2012-10-17"}"#, "no Statement"),
            (
                r#"{"Statement": [{"Effect": "allow", "Principal": "*", "Action": "*"}]}"#,
                "statement 1: has Effect \"allow\"",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Action": "*"}]}"#,
                "Principal",
            ),
            (
                r#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", "Condition": {"StringEquals": "x"}}}"#,
                "Condition.StringEquals",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(words), "{text}: {err}");
        }
    }
}
