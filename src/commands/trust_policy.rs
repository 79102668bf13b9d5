//! The `trust-policy` command: prints the role trust policy JSON for the given
//! ServiceAccounts, ready for `aws iam create-role --assume-role-policy-document`.

use std::process::ExitCode;

use crate::cli::TrustPolicyArgs;
use crate::irsa::issuer::Issuer;
use crate::irsa::trust_policy::{trust_policy, Provider, SubjectPattern};

pub fn run(args: TrustPolicyArgs) -> ExitCode {
    match render(&args) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => super::bad_input(message),
    }
}

/// The policy document as pretty JSON, or the one-line reason the input is unusable.
pub fn render(args: &TrustPolicyArgs) -> Result<String, String> {
    let issuer = args
        .issuer_url
        .as_deref()
        .map(Issuer::parse)
        .transpose()
        .map_err(|err| format!("--issuer-url: {err}"))?;
    let provider = match (&args.provider_arn, &args.account, &issuer) {
        (Some(arn), _, issuer) => Provider::from_arn(arn, issuer.as_ref())
            .map_err(|err| format!("--provider-arn: {err}"))?,
        (None, Some(account), Some(issuer)) => {
            Provider::for_account(&args.partition, account, issuer)
                .map_err(|err| format!("--account/--partition: {err}"))?
        }
        _ => return Err("give --account and --issuer-url, or --provider-arn".into()),
    };
    let subjects = args
        .service_accounts
        .iter()
        .map(|value| SubjectPattern::parse(value))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(empty) = args.audiences.iter().find(|a| a.trim().is_empty()) {
        return Err(format!(
            "--audience {empty:?} is empty; give the token audience (IRSA uses sts.amazonaws.com)"
        ));
    }
    let document = trust_policy(&provider, &subjects, &args.audiences);
    Ok(serde_json::to_string_pretty(&document).expect("JSON values always serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn args(line: &[&str]) -> Result<TrustPolicyArgs, String> {
        let cli = Cli::try_parse_from(["pod-identity-webhook", "trust-policy"].iter().chain(line))
            .map_err(|err| crate::cli::one_line(&err))?;
        match cli.into_command() {
            Command::TrustPolicy(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn account_and_issuer_or_provider_arn_give_the_same_policy() {
        let by_account = render(
            &args(&[
                "--account",
                "111122223333",
                "--issuer-url",
                "https://oidc.example.com/c1",
                "team-a:app",
            ])
            .unwrap(),
        )
        .unwrap();
        let by_arn = render(
            &args(&[
                "--provider-arn",
                "arn:aws:iam::111122223333:oidc-provider/oidc.example.com/c1",
                "team-a:app",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(by_account, by_arn);
        assert!(
            by_account
                .contains("\"oidc.example.com/c1:sub\": \"system:serviceaccount:team-a:app\""),
            "{by_account}"
        );
    }

    #[test]
    fn bad_input_is_one_line_naming_the_flag() {
        let err = render(
            &args(&[
                "--account",
                "111122223333",
                "--issuer-url",
                "oidc.example.com",
                "a:b",
            ])
            .unwrap(),
        )
        .unwrap_err();
        assert!(
            err.starts_with(
                "--issuer-url: issuer URL \"oidc.example.com\" does not start with https://"
            ),
            "{err}"
        );
        let err = render(
            &args(&[
                "--account",
                "111122223333",
                "--issuer-url",
                "https://x.example.com",
                "a/b",
            ])
            .unwrap(),
        )
        .unwrap_err();
        assert!(err.contains("is not NAMESPACE:SERVICEACCOUNT"), "{err}");
        let err = args(&["--issuer-url", "https://x.example.com", "a:b"]).unwrap_err();
        assert!(err.contains("--account"), "{err}");
        let err = args(&[
            "--account",
            "111122223333",
            "--issuer-url",
            "https://x.example.com",
        ])
        .unwrap_err();
        assert!(err.contains("NAMESPACE:SERVICEACCOUNT"), "{err}");
    }
}
