//! The process's OpenTelemetry metrics in Prometheus' text format, named as the OpenTelemetry to
//! Prometheus mapping names them: dots become underscores, the unit is a suffix (`_seconds`;
//! annotations such as `{token}` are dropped), monotonic sums end in `_total`, histograms are
//! cumulative `_bucket`s with `_sum` and `_count`.

use std::fmt::{Display, Write};

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

/// The exposition text of `metrics`.
pub fn render(metrics: &ResourceMetrics) -> String {
    let mut out = String::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => write_metric(&mut out, metric, data),
                AggregatedMetrics::U64(data) => write_metric(&mut out, metric, data),
                AggregatedMetrics::I64(data) => write_metric(&mut out, metric, data),
            }
        }
    }
    out
}

fn write_metric<T: Copy + Display>(out: &mut String, metric: &Metric, data: &MetricData<T>) {
    let base = base_name(metric.name(), metric.unit());
    let help = metric.description().replace('\\', "\\\\").replace('\n', "\\n");
    match data {
        MetricData::Sum(sum) => {
            let (name, kind) = match sum.is_monotonic() {
                true => (format!("{base}_total"), "counter"),
                false => (base, "gauge"),
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for point in sum.data_points() {
                let _ = writeln!(out, "{name}{} {}", labels(point.attributes(), None), point.value());
            }
        }
        MetricData::Gauge(gauge) => {
            let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} gauge");
            for point in gauge.data_points() {
                let _ = writeln!(out, "{base}{} {}", labels(point.attributes(), None), point.value());
            }
        }
        MetricData::Histogram(histogram) => {
            let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} histogram");
            for point in histogram.data_points() {
                let mut cumulative = 0;
                let bounds = point.bounds().map(|b| b.to_string()).chain(["+Inf".to_string()]);
                for (bound, count) in bounds.zip(point.bucket_counts()) {
                    cumulative += count;
                    let _ = writeln!(out, "{base}_bucket{} {cumulative}", labels(point.attributes(), Some(&bound)));
                }
                let plain = labels(point.attributes(), None);
                let _ = writeln!(out, "{base}_sum{plain} {}\n{base}_count{plain} {}", point.sum(), point.count());
            }
        }
        // reagent records none.
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// `gen_ai.client.operation.duration` in `s` → `gen_ai_client_operation_duration_seconds`.
fn base_name(name: &str, unit: &str) -> String {
    let mut base = sanitized(name);
    let suffix = match unit {
        "s" => "seconds",
        "ms" => "milliseconds",
        "By" => "bytes",
        "1" | "" => "",
        unit if unit.starts_with('{') => "",
        unit => return format!("{base}_{}", sanitized(unit)),
    };
    if !suffix.is_empty() && !base.ends_with(suffix) {
        base = format!("{base}_{suffix}");
    }
    base
}

fn sanitized(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect()
}

/// `{a="x",le="0.5"}`, or nothing for no labels.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>, le: Option<&str>) -> String {
    let mut pairs: Vec<String> =
        attributes.map(|kv| format!("{}=\"{}\"", sanitized(kv.key.as_str()), escaped(&kv.value.to_string()))).collect();
    pairs.sort();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() { String::new() } else { format!("{{{}}}", pairs.join(",")) }
}

fn escaped(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_mapping() {
        assert_eq!(base_name("gen_ai.client.operation.duration", "s"), "gen_ai_client_operation_duration_seconds");
        assert_eq!(base_name("gen_ai.client.token.usage", "{token}"), "gen_ai_client_token_usage");
        assert_eq!(base_name("reagent.runs", ""), "reagent_runs");
    }

    #[test]
    fn label_values_are_escaped() {
        let attributes = [KeyValue::new("error.type", "a \"b\"\nc"), KeyValue::new("a", "1")];
        assert_eq!(labels(attributes.iter(), Some("0.5")), r#"{a="1",error_type="a \"b\"\nc",le="0.5"}"#);
    }
}
