//! `clock_now`, `clock_add`, `clock_between`: the current time in a time zone, and calendar
//! arithmetic that gets months, leap years and daylight saving right (jiff, with the IANA time
//! zone database bundled into the component).

use jiff::tz::TimeZone;
use jiff::{Span, Unit, Zoned, civil};
use reagent_tool::ToolError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NowArgs {
    /// An IANA time zone, e.g. "Asia/Seoul" (default "UTC").
    time_zone: Option<String>,
}

#[derive(Serialize, JsonSchema, Debug, PartialEq)]
struct Moment {
    /// RFC 9557, e.g. 2026-11-22T15:00:00+09:00[Asia/Seoul]
    datetime: String,
    date: String,
    time: String,
    weekday: String,
    time_zone: String,
    unix_seconds: i64,
}

fn zone(name: Option<&str>) -> Result<TimeZone, ToolError> {
    let name = name.unwrap_or("UTC");
    TimeZone::get(name)
        .map_err(|_| ToolError::invalid_arguments(format!("`{name}` is not an IANA time zone, e.g. Europe/Paris")))
}

fn moment(zoned: &Zoned) -> Moment {
    Moment {
        datetime: zoned.to_string(),
        date: zoned.date().to_string(),
        time: zoned.time().strftime("%H:%M:%S").to_string(),
        weekday: format!("{:?}", zoned.weekday()),
        time_zone: zoned.time_zone().iana_name().unwrap_or("UTC").to_string(),
        unix_seconds: zoned.timestamp().as_second(),
    }
}

fn clock_now(args: NowArgs) -> Result<Moment, ToolError> {
    Ok(moment(&Zoned::now().with_time_zone(zone(args.time_zone.as_deref())?)))
}

/// Reads `2026-01-31`, `2026-01-31T10:00`, `2026-01-31T10:00:00Z`, `…+09:00` or
/// `…[Asia/Seoul]`; dates and times without an offset are in `time_zone`.
fn parse_moment(text: &str, time_zone: Option<&str>) -> Result<Zoned, ToolError> {
    let text = text.trim();
    if let Ok(zoned) = text.parse::<Zoned>() {
        return Ok(zoned);
    }
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Ok(timestamp.to_zoned(zone(time_zone)?));
    }
    let datetime = text
        .parse::<civil::DateTime>()
        .or_else(|_| text.parse::<civil::Date>().map(|d| d.to_datetime(civil::Time::midnight())))
        .map_err(|_| {
            ToolError::invalid_arguments(format!(
                "`{text}` is not a date or time; write e.g. 2026-01-31 or 2026-01-31T10:00:00+09:00"
            ))
        })?;
    datetime.to_zoned(zone(time_zone)?).map_err(|e| ToolError::invalid_arguments(e.to_string()))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddArgs {
    /// The starting date or time, e.g. "2026-01-31" or "2026-01-31T10:00:00+09:00".
    datetime: String,
    /// What to add: "1 month 2 days", "-3 hours", or ISO 8601 "P1M2D".
    span: String,
    /// The time zone for a date or time without an offset (default "UTC").
    time_zone: Option<String>,
}

fn clock_add(args: AddArgs) -> Result<Moment, ToolError> {
    let start = parse_moment(&args.datetime, args.time_zone.as_deref())?;
    let span: Span = args.span.parse().map_err(|e| {
        ToolError::invalid_arguments(format!(
            "`{}` is not a span ({e}); write e.g. \"1 month 2 days\" or P1M2D",
            args.span
        ))
    })?;
    let end = start.checked_add(span).map_err(|e| ToolError::invalid_arguments(e.to_string()))?;
    Ok(moment(&end))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BetweenArgs {
    start: String,
    end: String,
    /// The largest unit of the answer: "year", "month", "week", "day" (default), "hour", "minute" or "second".
    largest_unit: Option<String>,
    /// The time zone for dates or times without an offset (default "UTC").
    time_zone: Option<String>,
}

#[derive(Serialize, JsonSchema, Debug, PartialEq)]
struct Between {
    /// e.g. "1mo 2d" (friendly format)
    span: String,
    /// ISO 8601, e.g. P1M2D
    iso: String,
    /// The whole span in seconds.
    total_seconds: i64,
}

fn clock_between(args: BetweenArgs) -> Result<Between, ToolError> {
    let tz = args.time_zone.as_deref();
    let (start, end) = (parse_moment(&args.start, tz)?, parse_moment(&args.end, tz)?);
    let unit = match args.largest_unit.as_deref().unwrap_or("day") {
        "year" => Unit::Year,
        "month" => Unit::Month,
        "week" => Unit::Week,
        "day" => Unit::Day,
        "hour" => Unit::Hour,
        "minute" => Unit::Minute,
        "second" => Unit::Second,
        other => {
            return Err(ToolError::invalid_arguments(format!(
                "`{other}` is not a unit: year, month, week, day, hour, minute or second"
            )));
        }
    };
    let span = start.until((unit, &end)).map_err(|e| ToolError::invalid_arguments(e.to_string()))?;
    let total_seconds = end.timestamp().as_second() - start.timestamp().as_second();
    Ok(Between { span: format!("{span:#}"), iso: span.to_string(), total_seconds })
}

reagent_tool::export_tools! {
    clock_now: Idempotent => "The current date and time in a time zone (IANA name, default UTC).",
    clock_add: Pure => "Adds a span (\"1 month 2 days\", \"-3 hours\", P1M2D) to a date or time, with calendar and time zone rules.",
    clock_between: Pure => "The span between two dates or times, up to a largest unit.",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_arithmetic() {
        let add = |datetime: &str, span: &str, tz: Option<&str>| {
            clock_add(AddArgs { datetime: datetime.into(), span: span.into(), time_zone: tz.map(Into::into) })
        };
        assert_eq!(add("2024-01-31", "1 month", None).unwrap().date, "2024-02-29");
        assert_eq!(
            add("2026-03-28T12:00", "1 day", Some("Europe/Paris")).unwrap().datetime,
            "2026-03-29T12:00:00+02:00[Europe/Paris]"
        );
        assert_eq!(add("2026-01-01T00:00:00Z", "P1DT2H", None).unwrap().datetime, "2026-01-02T02:00:00+00:00[UTC]");
        assert!(add("yesterday", "1 day", None).unwrap_err().message.contains("not a date"));
        assert!(add("2026-01-01", "soon", None).unwrap_err().message.contains("not a span"));
        assert!(add("2026-01-01", "1 day", Some("Mars/Olympus")).unwrap_err().message.contains("IANA"));
    }

    #[test]
    fn spans_between() {
        let between = clock_between(BetweenArgs {
            start: "2026-01-15".into(),
            end: "2026-03-17".into(),
            largest_unit: Some("month".into()),
            time_zone: None,
        })
        .unwrap();
        assert_eq!((between.iso.as_str(), between.total_seconds), ("P2M2D", 61 * 86_400));
        let now = clock_now(NowArgs { time_zone: Some("Asia/Seoul".into()) }).unwrap();
        assert_eq!(now.time_zone, "Asia/Seoul");
        assert!(now.datetime.ends_with("+09:00[Asia/Seoul]"), "{}", now.datetime);
    }
}
