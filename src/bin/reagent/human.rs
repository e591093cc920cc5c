//! The run as a person reads it, on stderr, so stdout carries only the answer.

use std::io::Write;

use reagent::events::{Event, RunStatus};

/// Long tool results and reasoning are cut for the terminal; `--json` has them whole.
const MAX_SHOWN: usize = 2_000;

pub struct Printer {
    err: std::io::Stderr,
}

impl Printer {
    pub fn new() -> Self {
        Printer { err: std::io::stderr() }
    }

    pub fn print(&mut self, event: &Event) {
        let line = match event {
            Event::RunStarted { agent, model, tools, .. } => {
                format!("agent {agent} · model {model} · tools: {}", tools.join(", "))
            }
            Event::StepStarted { step, thinking } => {
                format!("── step {step}{}", if *thinking { " (thinking)" } else { "" })
            }
            // The whole text follows in its own event; the terminal shows it once.
            Event::Delta { .. } => return,
            Event::Usage { usage, .. } => labelled(
                "tokens",
                &format!(
                    "{} in · {} out ({} thinking)",
                    usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens
                ),
            ),
            Event::ThinkingCut { tokens, .. } => labelled(
                "cut",
                &format!("thinking stopped at {tokens} tokens (reasoning.max_thinking_tokens); asking again without"),
            ),
            Event::Reconsidering { draft, .. } => {
                labelled("draft", &format!("{draft}\n(reasoning.before_answer: thinking it over)"))
            }
            Event::ModelOutput { .. } => return,
            Event::Reasoning { text, .. } => labelled("thinking", text),
            Event::Text { text, .. } => labelled("says", text),
            Event::ToolCall { tool, arguments, .. } => labelled("call", &format!("{tool} {arguments}")),
            Event::ToolProgress { progress, total, message, .. } => {
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                let said = message.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
                labelled("progress", &format!("{progress}{of}{said}"))
            }
            Event::ToolResult { ok: true, result, duration_ms, log, .. } => {
                let shown = result.as_ref().map(|r| r.to_string()).unwrap_or_default();
                let mut line = labelled("result", &format!("{shown}  [{duration_ms:.1} ms]"));
                if !log.is_empty() {
                    line.push('\n');
                    line.push_str(&labelled("log", log));
                }
                line
            }
            Event::ToolResult { error, .. } => {
                let shown = error.as_ref().map(|e| format!("{}: {}", e.kind, e.message)).unwrap_or_default();
                labelled("error", &shown)
            }
            Event::BudgetSpent { message, .. } => {
                labelled("budget", &format!("{message}: one last turn, without tools, for the best answer"))
            }
            Event::OutputInvalid { answer, errors, .. } => {
                labelled("invalid", &format!("{answer}\ndoes not match output.schema:\n- {}", errors.join("\n- ")))
            }
            Event::ApprovalRequired { tool, arguments, .. } => {
                labelled("approval", &format!("{tool} {arguments} waits for a person's yes"))
            }
            Event::SubAgent { path, inner } => match inner.as_ref() {
                Event::ToolCall { tool, arguments, .. } => {
                    labelled(&path.join("/"), &format!("call {tool} {arguments}"))
                }
                Event::ToolResult { ok, result, error, .. } => {
                    let shown = match (ok, result, error) {
                        (true, Some(result), _) => format!("result {result}"),
                        (_, _, Some(error)) => format!("error {}: {}", error.kind, error.message),
                        _ => return,
                    };
                    labelled(&path.join("/"), &shown)
                }
                Event::Answer { text, .. } => labelled(&path.join("/"), &format!("answer {text}")),
                _ => return,
            },
            Event::InDoubt { id, tool, arguments, .. } => labelled(
                "in doubt",
                &format!("{tool} {arguments} ({id}) may or may not have happened: decide retry, done or skip"),
            ),
            Event::RunResumed { approved, denied, retried, done, skipped, .. } => labelled(
                "resumed",
                &format!(
                    "approved: {} · denied: {} · retried: {} · done: {} · skipped: {}",
                    approved.len(),
                    denied.len(),
                    retried.len(),
                    done.len(),
                    skipped.len()
                ),
            ),
            Event::Answer { text, .. } => labelled("answer", text),
            Event::RunFinished { status: RunStatus::Answered, steps, .. } => format!("── answered in {steps} step(s)"),
            Event::RunFinished { message, .. } => format!("── stopped: {}", message.as_deref().unwrap_or("")),
        };
        let _ = writeln!(self.err, "{line}");
    }
}

/// `label │ text`, with continuation lines indented under the text.
fn labelled(label: &str, text: &str) -> String {
    let text = text.trim();
    let text = match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}… ({} more characters)", &text[..cut], text[cut..].chars().count()),
        None => text.to_string(),
    };
    let indent = format!("\n   {:8} │ ", "");
    format!("   {label:8} │ {}", text.replace('\n', &indent))
}
