//! Which source the rates and unacked counts come from (`metrics = "auto" | "prometheus" |
//! "management"`), as the profile, `--metrics` or `HOPBACK_METRICS` say.

use super::ConfigError;

/// The metrics source a profile asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsMode {
    /// Prometheus when it answers with per-queue counters, else the management API's statistics;
    /// hopback says which it uses.
    #[default]
    Auto,
    /// Only the `rabbitmq_prometheus` endpoint (unknown when it does not answer).
    Prometheus,
    /// Only the management API's statistics (the metrics collector).
    Management,
}

impl MetricsMode {
    /// `auto`, `prometheus`, `management`.
    pub fn name(self) -> &'static str {
        match self {
            MetricsMode::Auto => "auto",
            MetricsMode::Prometheus => "prometheus",
            MetricsMode::Management => "management",
        }
    }
    /// Parse a setting; the error names where it came from.
    pub fn parse(text: &str, from: &str) -> Result<Self, ConfigError> {
        match text.trim() {
            "auto" => Ok(MetricsMode::Auto),
            "prometheus" => Ok(MetricsMode::Prometheus),
            "management" => Ok(MetricsMode::Management),
            other => Err(ConfigError::usage(
                format!(
                    "{from}: unknown metrics source `{}`",
                    crate::text::sanitize(other)
                ),
                "use auto, prometheus or management",
            )),
        }
    }
}
