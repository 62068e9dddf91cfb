//! Following a template build: polls its status every 0.2 s, prints new log
//! lines, and shows steps done / total, the current step and the elapsed
//! time — as a progress bar on a terminal, as plain lines otherwise.

use crate::client::Client;
use crate::error::Result;
use crate::opts::println;
use arbor_dockerfile::Plan;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the status is polled: as the SDKs do, after a first second of
/// quicker polls (a build whose steps are all cached is done in tens of ms).
const POLL: Duration = Duration::from_millis(200);
/// The quicker polls of the first second.
const FIRST_POLLS: Duration = Duration::from_millis(25);

/// How a followed build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The build is ready; the last status JSON.
    Ready(Value),
    /// The build failed; the last status JSON.
    Failed(Value),
}

/// Where lines go while following: through the bar when there is one.
struct Display {
    bar: Option<ProgressBar>,
    /// Log lines go to stderr (so `--json` keeps stdout for the result).
    logs_to_stderr: bool,
    last_step: Option<String>,
}

impl Display {
    fn new(logs_to_stderr: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template("{spinner} [{elapsed}] step {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self { bar, logs_to_stderr, last_step: None }
    }

    fn line(&self, text: &str) -> Result<()> {
        match &self.bar {
            Some(bar) => {
                bar.println(text);
                Ok(())
            }
            None if self.logs_to_stderr => {
                eprintln!("{text}");
                Ok(())
            }
            None => println(text),
        }
    }

    fn progress(&mut self, status: &Value, elapsed: Duration) -> Result<()> {
        let num = |k: &str| status.get(k).and_then(Value::as_u64);
        let (done, total) = (num("stepsDone").unwrap_or(0), num("stepsTotal").unwrap_or(0));
        let step = status.get("currentStep").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(step.clone().unwrap_or_default());
        } else if step.is_some() && step != self.last_step {
            let text = format!(
                "[{:>5.1}s] step {}/{total}: {}",
                elapsed.as_secs_f64(),
                done + 1,
                step.as_deref().unwrap_or("")
            );
            self.line(&text)?;
        }
        self.last_step = step;
        Ok(())
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The new log lines of a status answer: `logEntries` messages when the
/// server sends them, else `logs`.
fn new_lines(status: &Value) -> Vec<String> {
    let entries = status.get("logEntries").and_then(Value::as_array);
    if let Some(entries) = entries.filter(|e| !e.is_empty()) {
        return entries
            .iter()
            .map(|e| {
                let msg = e.get("message").and_then(Value::as_str).unwrap_or_default();
                match e.get("level").and_then(Value::as_str) {
                    Some(level @ ("warn" | "error")) => format!("{level}: {msg}"),
                    _ => msg.to_string(),
                }
            })
            .collect();
    }
    status
        .get("logs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Polls a build until it is ready or failed, printing its logs.
pub async fn follow(client: &Client, template_id: &str, build_id: &str, logs_to_stderr: bool) -> Result<Outcome> {
    let started = Instant::now();
    let mut display = Display::new(logs_to_stderr);
    let mut offset = 0;
    loop {
        let status = client.template_build_status(template_id, build_id, offset).await?;
        let lines = new_lines(&status);
        offset += lines.len();
        for line in &lines {
            display.line(line)?;
        }
        display.progress(&status, started.elapsed())?;
        match status.get("status").and_then(Value::as_str) {
            Some("ready") => {
                display.finish();
                return Ok(Outcome::Ready(status));
            }
            Some("error") => {
                display.finish();
                return Ok(Outcome::Failed(status));
            }
            _ => tokio::time::sleep(if started.elapsed() < Duration::from_secs(1) { FIRST_POLLS } else { POLL }).await,
        }
    }
}

/// The one-line explanation of a failed build: the reason's message, led by
/// the Dockerfile line of the failed step when the plan is known.
pub fn failure_message(status: &Value, plan: Option<&Plan>) -> String {
    let reason = status.get("reason");
    let message = reason.and_then(|r| r.get("message")).and_then(Value::as_str).unwrap_or("the build failed");
    let step = reason.and_then(|r| r.get("step")).and_then(|s| match s {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let line = step.as_deref().and_then(|s| plan.and_then(|p| p.line_of_step(s)));
    match (line, step) {
        (Some(line), _) => format!("Dockerfile:{line}: {message}"),
        (None, Some(step)) => format!("step {step}: {message}"),
        (None, None) => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn log_lines_prefer_entries() {
        let s =
            json!({"logs": ["a", "b"], "logEntries": [{"level":"info","message":"a"},{"level":"error","message":"b"}]});
        assert_eq!(new_lines(&s), ["a", "error: b"]);
        assert_eq!(new_lines(&json!({"logs": ["x"], "logEntries": []})), ["x"]);
        assert!(new_lines(&json!({})).is_empty());
    }

    #[test]
    fn failures_name_the_dockerfile_line() {
        let plan = arbor_dockerfile::parse("FROM base\n\nRUN true\nRUN false\nCMD x", &Default::default()).unwrap();
        let failed = |step: Value| json!({"status":"error","reason":{"message":"exit status 1","step":step}});
        assert_eq!(failure_message(&failed(json!("2")), Some(&plan)), "Dockerfile:4: exit status 1");
        assert_eq!(failure_message(&failed(json!(1)), Some(&plan)), "Dockerfile:3: exit status 1");
        assert_eq!(failure_message(&failed(json!("base")), Some(&plan)), "Dockerfile:1: exit status 1");
        assert_eq!(failure_message(&failed(json!("finalize")), Some(&plan)), "Dockerfile:5: exit status 1");
        assert_eq!(failure_message(&failed(json!("7")), Some(&plan)), "step 7: exit status 1");
        assert_eq!(failure_message(&failed(json!("2")), None), "step 2: exit status 1");
        assert_eq!(failure_message(&json!({"status":"error"}), None), "the build failed");
    }
}
