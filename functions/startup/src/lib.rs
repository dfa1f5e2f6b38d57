//! Start-up shared by the api-container, the auth Lambda and the deploy Lambda: how they read
//! `LOG_FORMAT` and `RUST_LOG`, and how they set up logging. A crate of its own so that the deploy
//! Lambda does not link the auth core (PostgreSQL, hashing) to get twenty lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    /// `LOG_FORMAT`: unset means "decide at start-up" (see [`init_tracing`]); anything but
    /// `json` or `pretty` is refused so that a typo is not silently read as the default.
    pub fn from_setting(value: Option<&str>) -> Result<Option<Self>, InvalidSetting> {
        match value {
            None | Some("") => Ok(None),
            Some("json") => Ok(Some(Self::Json)),
            Some("pretty") => Ok(Some(Self::Pretty)),
            Some(_) => Err(InvalidSetting),
        }
    }
}

/// A setting that does not parse; the caller names the variable in its own error type.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidSetting;

/// `RUST_LOG`: checked at start-up so that a filter that does not parse stops the process with a
/// clear error instead of logging nothing.
pub fn check_log_filter(value: Option<String>) -> Result<Option<String>, InvalidSetting> {
    match value {
        None => Ok(None),
        Some(filter) if filter.trim().is_empty() => Ok(None),
        Some(filter) => match EnvFilter::try_new(&filter) {
            Ok(_) => Ok(Some(filter)),
            Err(_) => Err(InvalidSetting),
        },
    }
}

/// Logs as JSON lines (for containers, CloudWatch and log shippers) or pretty text (for people at
/// a terminal); by default JSON unless standard output is a terminal. The filter defaults to
/// `info`. A second call (tests set up several services in one process) changes nothing.
pub fn init_tracing(format: Option<LogFormat>, filter: Option<&str>) {
    let filter =
        EnvFilter::try_new(filter.unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.pretty().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_takes_the_two_names_and_refuses_the_rest() {
        assert_eq!(LogFormat::from_setting(None), Ok(None));
        assert_eq!(
            LogFormat::from_setting(Some("json")),
            Ok(Some(LogFormat::Json))
        );
        assert_eq!(
            LogFormat::from_setting(Some("pretty")),
            Ok(Some(LogFormat::Pretty))
        );
        assert_eq!(LogFormat::from_setting(Some("xml")), Err(InvalidSetting));
        assert_eq!(LogFormat::from_setting(Some("JSON")), Err(InvalidSetting));
    }

    #[test]
    fn a_filter_that_does_not_parse_is_refused() {
        assert_eq!(check_log_filter(None), Ok(None));
        assert_eq!(
            check_log_filter(Some("info,tower_http=debug".into())),
            Ok(Some("info,tower_http=debug".into()))
        );
        assert_eq!(
            check_log_filter(Some("info,[[[".into())),
            Err(InvalidSetting)
        );
    }
}
