//! What the reference's command line inherits from Go: klog's flags, and the flag syntax of
//! Go's `flag` package (`-name` as well as `--name`). Both exist so that the reference's
//! deployment arguments start this binary unchanged.

use std::ffi::OsString;

use clap::Args;

use super::go_bool;

/// klog's flags, which the reference registers with `klog.InitFlags`. Values are checked as
/// klog checks them, so a value the reference would refuse is refused here too; apart from
/// `--logtostderr` (logs always go to standard error) none of them changes anything, and the
/// ones given are named once at startup.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "klog flags (accepted for compatibility; no effect here)")]
pub struct KlogFlags {
    /// Log to standard error as well as files (logs always go to standard error).
    #[arg(long = "alsologtostderr", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub alsologtostderr: Option<bool>,
    /// Severity at or above which file logs are copied to standard error.
    #[arg(long = "alsologtostderrthreshold", value_name = "SEVERITY", value_parser = severity)]
    pub alsologtostderrthreshold: Option<String>,
    /// Directory for log files (no log files are written).
    #[arg(long = "log_dir", value_name = "DIR")]
    pub log_dir: Option<String>,
    /// Log file (no log files are written).
    #[arg(long = "log_file", value_name = "FILE")]
    pub log_file: Option<String>,
    /// Largest log file in megabytes.
    #[arg(long = "log_file_max_size", value_name = "MB", value_parser = megabytes)]
    pub log_file_max_size: Option<u64>,
    /// Log to standard error instead of files; `false` is accepted but changes nothing.
    #[arg(long = "logtostderr", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub logtostderr: Option<bool>,
    /// Leave out the header of each log line.
    #[arg(long = "skip_headers", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub skip_headers: Option<bool>,
    /// Leave out the header of log files.
    #[arg(long = "skip_log_headers", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub skip_log_headers: Option<bool>,
    /// Severity at or above which logs go to standard error.
    #[arg(long = "stderrthreshold", value_name = "SEVERITY", value_parser = severity)]
    pub stderrthreshold: Option<String>,
    /// Per-file verbosity, `pattern=N,...` (use -v or RUST_LOG).
    #[arg(long = "vmodule", value_name = "PATTERN=N,...", value_parser = vmodule)]
    pub vmodule: Option<String>,
    /// Emit a stack trace when logging hits `file:N`.
    #[arg(long = "log_backtrace_at", value_name = "FILE:N", value_parser = trace_location)]
    pub log_backtrace_at: Option<String>,
    /// Add the source file's directory to log headers.
    #[arg(long = "add_dir_header", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub add_dir_header: Option<bool>,
    /// Write each line to its own severity's log only.
    #[arg(long = "one_output", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub one_output: Option<bool>,
    /// klog's old interplay of --stderrthreshold and --logtostderr.
    #[arg(long = "legacy_stderr_threshold_behavior", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub legacy_stderr_threshold_behavior: Option<bool>,
}

impl KlogFlags {
    /// The flags given that change nothing here, as `--name` (`--logtostderr=false` only
    /// when false: true is what happens anyway).
    pub fn without_effect(&self) -> Vec<String> {
        let given = [
            ("alsologtostderr", self.alsologtostderr.is_some()),
            (
                "alsologtostderrthreshold",
                self.alsologtostderrthreshold.is_some(),
            ),
            ("log_dir", self.log_dir.is_some()),
            ("log_file", self.log_file.is_some()),
            ("log_file_max_size", self.log_file_max_size.is_some()),
            ("skip_headers", self.skip_headers.is_some()),
            ("skip_log_headers", self.skip_log_headers.is_some()),
            ("stderrthreshold", self.stderrthreshold.is_some()),
            ("vmodule", self.vmodule.is_some()),
            ("log_backtrace_at", self.log_backtrace_at.is_some()),
            ("add_dir_header", self.add_dir_header.is_some()),
            ("one_output", self.one_output.is_some()),
            (
                "legacy_stderr_threshold_behavior",
                self.legacy_stderr_threshold_behavior.is_some(),
            ),
        ];
        let mut names: Vec<String> = given
            .into_iter()
            .filter(|(_, given)| *given)
            .map(|(name, _)| format!("--{name}"))
            .collect();
        if self.logtostderr == Some(false) {
            names.push("--logtostderr=false".into());
        }
        names
    }
}

/// klog's severities, by name (any case) or number.
fn severity(value: &str) -> Result<String, String> {
    let known = ["INFO", "WARNING", "ERROR", "FATAL"];
    let by_name = known.contains(&value.to_ascii_uppercase().as_str());
    let by_number = value.parse::<u8>().is_ok_and(|n| n <= 3);
    if by_name || by_number {
        Ok(value.to_string())
    } else {
        Err("expected a severity: INFO, WARNING, ERROR, FATAL or 0 to 3".into())
    }
}

fn megabytes(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| "expected a size in megabytes (a whole number, 0 for unlimited)".into())
}

/// `pattern=N` entries separated by commas; empty entries are ignored, as klog does.
fn vmodule(value: &str) -> Result<String, String> {
    for entry in value.split(',').filter(|entry| !entry.is_empty()) {
        let valid = match entry.split_once('=') {
            Some((pattern, level)) => {
                !pattern.is_empty() && !level.contains('=') && level.parse::<i32>().is_ok()
            }
            None => false,
        };
        if !valid {
            return Err(format!(
                "expected comma-separated pattern=N entries, got {entry:?}"
            ));
        }
    }
    Ok(value.to_string())
}

/// `file.go:N` with N > 0, or empty; klog's syntax.
fn trace_location(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Ok(String::new());
    }
    let valid = match value.split_once(':') {
        Some((file, line)) => {
            file.contains('.') && !line.contains(':') && line.parse::<u32>().is_ok_and(|n| n > 0)
        }
        None => false,
    };
    if valid {
        Ok(value.to_string())
    } else {
        Err("expected file:N, such as main.go:42".into())
    }
}

/// Rewrites `-name` and `-name=value` to `--name...` when `name` is a long flag of `command`
/// (or of its subcommands) longer than one character, as Go's `flag` package accepts one dash
/// or two. A long flag's separate value is joined to it (`--name=value`), so a value that
/// starts with `-` is still taken as the value, as in Go. Single-letter short flags (`-v 2`)
/// and everything after `--` are left alone.
pub(crate) fn go_style_args<I, T>(command: &clap::Command, args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut long_flags = Vec::new();
    collect_long_flags(command, &mut long_flags);
    let takes_next = |name: &str| {
        long_flags
            .iter()
            .find(|(long, _)| long == name)
            .map(|(_, takes)| *takes)
    };
    let mut out: Vec<OsString> = Vec::new();
    // The long flag (as `--name`) still waiting for its separate value.
    let mut awaiting: Option<String> = None;
    let mut rest = false;
    for (position, arg) in args.into_iter().enumerate() {
        let arg: OsString = arg.into();
        if let Some(flag) = awaiting.take() {
            let mut joined = OsString::from(format!("{flag}="));
            joined.push(&arg);
            out.push(joined);
            continue;
        }
        if position == 0 || rest {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        let (single, body) = match (text.strip_prefix("--"), text.strip_prefix('-')) {
            (Some(body), _) => (false, body),
            (None, Some(body)) => (true, body),
            (None, None) => {
                out.push(arg);
                continue;
            }
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, _)) => (name, true),
            None => (body, false),
        };
        match takes_next(name) {
            Some(takes) if !single || name.chars().count() > 1 => {
                if takes && !inline_value {
                    awaiting = Some(format!("--{name}"));
                } else if single {
                    out.push(format!("-{text}").into());
                } else {
                    out.push(arg);
                }
            }
            _ => out.push(arg),
        }
    }
    // A value-taking flag at the very end: left for clap to report its missing value.
    out.extend(awaiting.map(OsString::from));
    out
}

/// Every long flag of `command` and its subcommands, with whether it takes the next argument
/// as its value (Go-style booleans and other `require_equals` flags do not).
fn collect_long_flags(command: &clap::Command, out: &mut Vec<(String, bool)>) {
    for arg in command.get_arguments() {
        if let Some(long) = arg.get_long() {
            let takes = arg.get_action().takes_values() && !arg.is_require_equals_set();
            out.push((long.to_string(), takes));
        }
    }
    for sub in command.get_subcommands() {
        collect_long_flags(sub, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_values_are_checked_as_klog_does() {
        assert!(severity("warning").is_ok());
        assert!(severity("2").is_ok());
        assert!(severity("4").is_err());
        assert!(severity("loud").is_err());
        assert!(vmodule("").is_ok());
        assert!(vmodule("server=2,cache*=4,").is_ok());
        assert!(vmodule("server").is_err());
        assert!(vmodule("=2").is_err());
        assert!(vmodule("a=b").is_err());
        assert!(trace_location("").is_ok());
        assert!(trace_location("main.go:42").is_ok());
        assert!(trace_location("main.go:0").is_err());
        assert!(trace_location("main:42").is_err());
        assert!(megabytes("1800").is_ok());
        assert!(megabytes("-1").is_err());
    }
}
