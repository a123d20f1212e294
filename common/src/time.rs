//! Timestamps as the API shows them: RFC 3339, UTC, milliseconds (`2024-06-17T09:46:05.265Z`).

use chrono::{DateTime, SecondsFormat, Utc};

pub fn rfc3339_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, truncated to the millisecond, so what is stored is exactly what is shown.
pub fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// Parses an RFC 3339 time (for CLI filters such as `--since`).
pub fn parse_rfc3339(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("invalid time {raw:?} (RFC 3339 expected): {e}"))
}
