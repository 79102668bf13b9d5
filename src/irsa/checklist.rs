//! The doctor's answer: a list of checks, each passed, failed (with cause and fix), warned
//! or skipped, rendered as a readable checklist or as JSON; the exit code follows from it.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works, but something is worth knowing (an annotation value that was ignored).
    Warn,
    Fail,
    /// Not checked, with the reason in the details (missing input, nothing to check).
    Skip,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub cause: String,
    pub fix: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier for scripts, e.g. `service-account.exists`.
    pub id: &'static str,
    pub title: String,
    pub status: Status,
    /// Facts found (role, audience, claims...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl Check {
    pub fn new(id: &'static str, title: impl Into<String>) -> Self {
        Self {
            id,
            title: title.into(),
            status: Status::Pass,
            details: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.details.push(detail.into());
        self
    }

    /// Marks the check failed with one more cause and its fix.
    pub fn fail(mut self, cause: impl Into<String>, fix: impl Into<String>) -> Self {
        self.status = Status::Fail;
        self.problems.push(Problem {
            cause: cause.into(),
            fix: fix.into(),
        });
        self
    }

    /// A warning never downgrades a failure.
    pub fn warn(mut self, cause: impl Into<String>, fix: impl Into<String>) -> Self {
        if self.status != Status::Fail {
            self.status = Status::Warn;
        }
        self.problems.push(Problem {
            cause: cause.into(),
            fix: fix.into(),
        });
        self
    }

    pub fn skip(mut self, reason: impl Into<String>) -> Self {
        self.status = Status::Skip;
        self.details.push(reason.into());
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Report {
    /// What was examined, e.g. `ServiceAccount team-a/app`.
    pub subject: String,
    pub checks: Vec<Check>,
}

impl Report {
    /// Everything checked passed (warnings and skips do not fail).
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// 0 when everything checked passed, 1 otherwise.
    pub(crate) fn exit_code(&self) -> u8 {
        u8::from(!self.passed())
    }

    pub(crate) fn to_json(&self) -> String {
        let value = serde_json::json!({
            "subject": self.subject,
            "passed": self.passed(),
            "checks": self.checks,
        });
        serde_json::to_string_pretty(&value).expect("JSON values always serialize")
    }

    pub(crate) fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.subject);
        for check in &self.checks {
            let mark = match check.status {
                Status::Pass => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            out.push_str(&format!("  [{mark}] {}\n", check.title));
            for detail in &check.details {
                out.push_str(&format!("         {detail}\n"));
            }
            for problem in &check.problems {
                out.push_str(&format!("         cause: {}\n", problem.cause));
                out.push_str(&format!("         fix:   {}\n", problem.fix));
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let counted = self
            .checks
            .iter()
            .filter(|c| c.status != Status::Skip)
            .count();
        if failed == 0 {
            out.push_str(&format!("all {counted} checks passed\n"));
        } else {
            out.push_str(&format!("{failed} of {counted} checks failed\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            subject: "ServiceAccount team-a/app".into(),
            checks: vec![
                Check::new("service-account.exists", "ServiceAccount exists").detail("role arn:x"),
                Check::new("token.signature", "token signature").skip("no --jwks given"),
                Check::new("trust-policy", "trust policy allows the token").fail(
                    "the policy allows sub a, the token says b",
                    "change the policy",
                ),
                Check::new("service-account.annotations", "annotations")
                    .warn("token-expiration \"1h\" ignored", "use seconds"),
            ],
        }
    }

    #[test]
    fn text_shows_each_line_with_cause_and_fix_and_a_count() {
        let text = report().to_text();
        assert_eq!(
            text,
            "ServiceAccount team-a/app\n\
             \x20 [ok  ] ServiceAccount exists\n\
             \x20        role arn:x\n\
             \x20 [skip] token signature\n\
             \x20        no --jwks given\n\
             \x20 [FAIL] trust policy allows the token\n\
             \x20        cause: the policy allows sub a, the token says b\n\
             \x20        fix:   change the policy\n\
             \x20 [warn] annotations\n\
             \x20        cause: token-expiration \"1h\" ignored\n\
             \x20        fix:   use seconds\n\
             1 of 3 checks failed\n"
        );
    }

    #[test]
    fn exit_code_is_zero_only_without_failures() {
        let mut report = report();
        assert_eq!(report.exit_code(), 1);
        report.checks.retain(|c| c.status != Status::Fail);
        assert_eq!(report.exit_code(), 0);
        assert!(report.to_text().ends_with("all 2 checks passed\n"));
    }

    #[test]
    fn json_carries_ids_statuses_and_problems() {
        let json: serde_json::Value = serde_json::from_str(&report().to_json()).unwrap();
        assert_eq!(json["passed"], false);
        assert_eq!(json["checks"][2]["id"], "trust-policy");
        assert_eq!(json["checks"][2]["status"], "fail");
        assert_eq!(json["checks"][2]["problems"][0]["fix"], "change the policy");
        assert_eq!(json["checks"][1]["status"], "skip");
        assert!(json["checks"][0].get("problems").is_none());
    }
}
