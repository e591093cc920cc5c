//! Sizes (`64MiB`, `512KiB`, `1GB`, or a number of bytes) and durations (`500ms`, `5s`, `2m`) as
//! people write them in agent files.

use std::time::Duration;

pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize =
        number.parse().map_err(|_| format!("`{text}` is not a size; write a number and a unit, e.g. 64MiB"))?;
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`; use B, KiB, MiB, GiB, KB, MB or GB, e.g. `{number}MiB`"
            ));
        }
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("`{text}` is too large; write e.g. 64MiB"))
}

/// A duration that must not be zero; `zero` says why, in the caller's terms.
pub fn parse_positive_duration(text: &str, zero: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|d| if d.is_zero() { Err(zero.to_string()) } else { Ok(d) })
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration; write e.g. 5s or 500ms"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" | "min" => Ok(Duration::from_secs(number.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(number.saturating_mul(3600))),
        "" => Err(format!("`{text}` needs a unit: ms, s, m or h, e.g. `{number}s`")),
        other => Err(format!(
            "unknown duration unit `{other}` in `{text}`; use ms, s, m or h, e.g. `{}`",
            in_known_units(number, other)
        )),
    }
}

/// `number` `unit` rewritten in a unit reagent reads, where the unit is a common spelling of one.
fn in_known_units(number: u64, unit: &str) -> String {
    match unit.to_ascii_lowercase().as_str() {
        "d" | "day" | "days" => format!("{}h", number.saturating_mul(24)),
        "hr" | "hrs" | "hour" | "hours" => format!("{number}h"),
        "mins" | "minute" | "minutes" => format!("{number}m"),
        "msec" | "msecs" | "millis" | "millisecond" | "milliseconds" => format!("{number}ms"),
        _ => format!("{number}s"),
    }
}

/// Durations go into events as whole milliseconds.
pub fn as_millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1 GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("MiB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        // Each message shows the value rewritten as it would be accepted.
        assert!(parse_size("10 parsecs").unwrap_err().ends_with("e.g. `10MiB`"));
        assert!(parse_duration("2 minutes").unwrap_err().ends_with("e.g. `2m`"));
        assert!(parse_duration("1day").unwrap_err().ends_with("e.g. `24h`"));
        assert!(parse_duration("5").unwrap_err().ends_with("e.g. `5s`"));
    }
}
