//! Retry and stall settings from environment variables, shared by
//! `osdeploy serve` and the Lambda functions so both read them alike.

use jiff::SignedDuration;

use super::ServiceConfig;
use crate::domain::RetryPolicies;

/// JSON retry policy per failure reason; see [`RetryPolicies`] for the form.
pub const RETRY_POLICY_VARIABLE: &str = "OSDEPLOY_RETRY_POLICY";
/// Time without a report before the sweep pushes a device, such as `6h`.
pub const STALL_PUSH_AFTER_VARIABLE: &str = "OSDEPLOY_STALL_PUSH_AFTER";
/// Time without a report before the sweep counts a failed attempt, such as `72h`.
pub const STALL_FAIL_AFTER_VARIABLE: &str = "OSDEPLOY_STALL_FAIL_AFTER";

/// A retry or stall setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct RetrySettingError {
    /// The environment variable at fault.
    pub variable: &'static str,
    pub problem: String,
}

/// Reads the retry policy and the stall periods into `config`. Unset or
/// empty variables keep the values `config` has.
pub fn apply_retry_settings(
    config: &mut ServiceConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(), RetrySettingError> {
    let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    if let Some(json) = read(RETRY_POLICY_VARIABLE) {
        config.retry_policy = RetryPolicies::from_json(&json).map_err(|e| RetrySettingError {
            variable: RETRY_POLICY_VARIABLE,
            problem: e.to_string(),
        })?;
    }
    if let Some(text) = read(STALL_PUSH_AFTER_VARIABLE) {
        config.stall_push_after = parse_period(STALL_PUSH_AFTER_VARIABLE, &text)?;
    }
    if let Some(text) = read(STALL_FAIL_AFTER_VARIABLE) {
        config.stall_fail_after = parse_period(STALL_FAIL_AFTER_VARIABLE, &text)?;
    }
    if config.stall_fail_after <= config.stall_push_after {
        return Err(RetrySettingError {
            variable: STALL_FAIL_AFTER_VARIABLE,
            problem: format!(
                "{:#} must be longer than {STALL_PUSH_AFTER_VARIABLE} ({:#}), \
                 so that a stalled device is pushed before its attempt is failed",
                config.stall_fail_after, config.stall_push_after
            ),
        });
    }
    Ok(())
}

/// Parses a period such as `6h`, `90m` or `PT6H`, of at least one minute.
fn parse_period(variable: &'static str, text: &str) -> Result<SignedDuration, RetrySettingError> {
    let invalid = |problem: String| RetrySettingError { variable, problem };
    let period: SignedDuration = text.trim().parse().map_err(|e| {
        invalid(format!(
            "invalid period {text:?} ({e}); write it as \"6h\", \"90m\" or \"PT6H\""
        ))
    })?;
    if period < SignedDuration::from_mins(1) {
        return Err(invalid(format!(
            "invalid period {text:?}: use at least one minute"
        )));
    }
    Ok(period)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// An environment variable's name and value.
    type Variable<'a> = (&'a str, &'a str);

    fn apply(variables: &[Variable]) -> Result<ServiceConfig, RetrySettingError> {
        let variables: BTreeMap<String, String> = variables
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut config = ServiceConfig::default();
        apply_retry_settings(&mut config, |name| variables.get(name).cloned())?;
        Ok(config)
    }

    #[test]
    fn unset_variables_keep_defaults() {
        let config = apply(&[]).unwrap();
        let defaults = ServiceConfig::default();
        assert_eq!(config.retry_policy, defaults.retry_policy);
        assert_eq!(config.stall_push_after, defaults.stall_push_after);
        assert_eq!(config.stall_fail_after, defaults.stall_fail_after);
    }

    #[test]
    fn variables_set_policy_and_periods() {
        let config = apply(&[
            (
                RETRY_POLICY_VARIABLE,
                r#"{"default": {"max_attempts": 5, "initial_backoff_seconds": 600}}"#,
            ),
            (STALL_PUSH_AFTER_VARIABLE, "2h"),
            (STALL_FAIL_AFTER_VARIABLE, "PT24H"),
        ])
        .unwrap();
        assert_eq!(config.retry_policy.default.max_attempts, 5);
        assert_eq!(config.retry_policy.default.initial_backoff_seconds, 600);
        assert_eq!(config.stall_push_after, SignedDuration::from_hours(2));
        assert_eq!(config.stall_fail_after, SignedDuration::from_hours(24));
    }

    #[test]
    fn bad_settings_name_variable_and_key() {
        let cases: [(&[Variable], &str, &str); 4] = [
            (
                &[(
                    RETRY_POLICY_VARIABLE,
                    r#"{"by_reason": {"LowBattery": {"max_attempts": 3, "initial_backoff_seconds": 600}}}"#,
                )],
                RETRY_POLICY_VARIABLE,
                "LowBattery",
            ),
            (
                &[(STALL_PUSH_AFTER_VARIABLE, "soon")],
                STALL_PUSH_AFTER_VARIABLE,
                "\"soon\"",
            ),
            (
                &[(STALL_FAIL_AFTER_VARIABLE, "10s")],
                STALL_FAIL_AFTER_VARIABLE,
                "at least one minute",
            ),
            (
                &[
                    (STALL_PUSH_AFTER_VARIABLE, "8h"),
                    (STALL_FAIL_AFTER_VARIABLE, "4h"),
                ],
                STALL_FAIL_AFTER_VARIABLE,
                "must be longer",
            ),
        ];
        for (variables, variable, named) in cases {
            let error = apply(variables).unwrap_err();
            assert_eq!(error.variable, variable, "{variables:?}");
            assert!(error.to_string().contains(named), "{variables:?}: {error}");
        }
    }
}
