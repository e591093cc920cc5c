//! What `reagent test` writes for machines: JUnit XML, the format CI systems read test results
//! in, and JSON.

use serde_json::{Value, json};

use super::runner::{CaseReport, Verdict};

/// The reports as one JUnit XML document: a `<testsuite>` per suite file, a `<testcase>` per case;
/// a failed case holds a `<failure>`, a stale one a `<failure type="stale">`, one that could not
/// run an `<error>`.
pub fn junit(reports: &[CaseReport], seconds: f64) -> String {
    let count = |f: &dyn Fn(&CaseReport) -> bool| reports.iter().filter(|r| f(r)).count();
    let failures = |r: &CaseReport| matches!(r.verdict, Verdict::Failed(_) | Verdict::Stale { .. });
    let errors = |r: &CaseReport| matches!(r.verdict, Verdict::Error(_));
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"reagent test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{seconds:.3}\">\n",
        reports.len(),
        count(&failures),
        count(&errors)
    ));
    let mut suites: Vec<&std::path::Path> = reports.iter().map(|r| r.suite.as_path()).collect();
    suites.dedup();
    for suite in suites {
        let cases: Vec<&CaseReport> = reports.iter().filter(|r| r.suite == suite).collect();
        let time: f64 = cases.iter().map(|r| r.duration.as_secs_f64()).sum();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{time:.3}\">\n",
            escape(&suite.display().to_string()),
            cases.len(),
            cases.iter().filter(|r| failures(r)).count(),
            cases.iter().filter(|r| errors(r)).count(),
        ));
        for case in cases {
            xml.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                escape(&case.case),
                escape(&classname(&case.suite)),
                case.duration.as_secs_f64()
            ));
            let body = match &case.verdict {
                Verdict::Passed => None,
                Verdict::Failed(failures) => {
                    let first = failures.first().map(ToString::to_string).unwrap_or_default();
                    let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
                    Some(format!(
                        "      <failure type=\"assertion\" message=\"{}\">{}</failure>\n",
                        escape(&first),
                        escape(&all.join("\n"))
                    ))
                }
                Verdict::Stale { why, rerecord } => Some(format!(
                    "      <failure type=\"stale\" message=\"{}\">{}</failure>\n",
                    escape(why),
                    escape(&format!("{why}\nrecord it again: {rerecord}"))
                )),
                Verdict::Error(message) => {
                    Some(format!("      <error type=\"error\" message=\"{}\"/>\n", escape(message)))
                }
            };
            let notes = (!case.notes.is_empty())
                .then(|| format!("      <system-out>{}</system-out>\n", escape(&case.notes.join("\n"))));
            match (body, notes) {
                (None, None) => xml.push_str("/>\n"),
                (body, notes) => {
                    xml.push_str(">\n");
                    xml.push_str(&body.unwrap_or_default());
                    xml.push_str(&notes.unwrap_or_default());
                    xml.push_str("    </testcase>\n");
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The suite file's name without `.test.yaml`: what CI systems group cases by.
fn classname(suite: &std::path::Path) -> String {
    let name = suite.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.trim_end_matches(".yaml").trim_end_matches(".yml").trim_end_matches(".test").to_string()
}

/// Text as XML character data or an attribute value; characters XML 1.0 cannot hold are dropped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A case's report as a JSON object (one line of `reagent test --json`).
pub fn case_json(report: &CaseReport) -> Value {
    let (verdict, details) = match &report.verdict {
        Verdict::Passed => ("passed", json!({})),
        Verdict::Failed(failures) => (
            "failed",
            json!({"failures": failures.iter().map(|f| json!({
                "check": f.check,
                "message": f.message,
                "event": f.event.as_ref().map(|(n, _)| n),
                "event_name": f.event.as_ref().map(|(_, name)| name),
                "step": f.step,
            })).collect::<Vec<_>>()}),
        ),
        Verdict::Stale { why, rerecord } => ("stale", json!({"why": why, "rerecord": rerecord})),
        Verdict::Error(message) => ("error", json!({"error": message})),
    };
    let mut object = json!({
        "type": "case",
        "suite": report.suite,
        "case": report.case,
        "mode": report.mode,
        "verdict": verdict,
        "runs": report.runs,
        "passed_runs": report.passed,
        "pass_rate": report.pass_rate,
        "steps": report.steps,
        "duration_ms": report.duration.as_secs_f64() * 1000.0,
        "notes": report.notes,
    });
    if let (Value::Object(object), Value::Object(details)) = (&mut object, details) {
        object.extend(details);
    }
    object
}
