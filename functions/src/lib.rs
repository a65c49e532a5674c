//! Shared pieces of every Lambda function: typed configuration read once at
//! cold start, and logging set up for CloudWatch.

use std::path::PathBuf;

use osdeploy_shared::service::ServiceConfig;

/// Configuration from the environment; a missing or bad variable fails the
/// cold start and names itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// `OSDEPLOY_DATABASE`: path of the embedded store.
    pub database: PathBuf,
    /// `OSDEPLOY_ADMIN_TOKEN`: optional bearer token checked behind the authorizer.
    pub admin_token: Option<String>,
    pub service: ServiceConfig,
}

/// A variable that is missing or invalid.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable lookup, for tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let database = lookup("OSDEPLOY_DATABASE").ok_or(ConfigError {
            name: "OSDEPLOY_DATABASE",
            problem: "is not set; give the path of the database file".into(),
        })?;
        let mut service = ServiceConfig::default();
        if let Some(zone) = lookup("OSDEPLOY_DEFAULT_TIME_ZONE") {
            osdeploy_shared::domain::deadline::parse_time_zone(&zone).map_err(|e| ConfigError {
                name: "OSDEPLOY_DEFAULT_TIME_ZONE",
                problem: e.to_string(),
            })?;
            service.default_time_zone = zone;
        }
        Ok(Config {
            database: PathBuf::from(database),
            admin_token: lookup("OSDEPLOY_ADMIN_TOKEN").filter(|t| !t.is_empty()),
            service,
        })
    }
}

/// JSON logs without ANSI colours or timestamps (CloudWatch adds its own).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OSDEPLOY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_database_names_the_variable() {
        let error = Config::from_lookup(|_| None).unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_DATABASE");
    }

    #[test]
    fn bad_time_zone_names_the_variable() {
        let error = Config::from_lookup(|name| match name {
            "OSDEPLOY_DATABASE" => Some("/tmp/x.db".into()),
            "OSDEPLOY_DEFAULT_TIME_ZONE" => Some("Mars/Olympus".into()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_DEFAULT_TIME_ZONE");
        assert!(error.problem.contains("Mars/Olympus"), "{}", error.problem);
    }

    #[test]
    fn empty_admin_token_counts_as_unset() {
        let config = Config::from_lookup(|name| match name {
            "OSDEPLOY_DATABASE" => Some("/tmp/x.db".into()),
            "OSDEPLOY_ADMIN_TOKEN" => Some(String::new()),
            _ => None,
        })
        .unwrap();
        assert!(config.admin_token.is_none());
        assert_eq!(config.service.default_time_zone, "UTC");
    }
}
