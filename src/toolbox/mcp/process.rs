//! A stdio MCP server's process: started with nothing but what the agent grants, its stdout read
//! as protocol and nothing else, its stderr kept in a small ring for error messages (never on
//! reagent's own output), its whole process group ended with it.

use std::future::Future;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::RoleClient;
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;

/// The longest message a server may send: more is a fault, not a reason to grow without bound.
pub const MAX_MESSAGE: usize = 16 << 20;
/// The bytes of a server's stderr kept for error messages.
const STDERR_TAIL: usize = 4 << 10;
/// The characters of a stray stdout line quoted in the fault.
const QUOTED: usize = 120;
/// After stdin closes, how long a server has to exit before SIGTERM, and then before SIGKILL.
const GRACE: Duration = Duration::from_millis(500);

/// The `PATH` a server gets when reagent itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What went wrong on a server's side of the pipe, and the end of what it wrote to stderr.
#[derive(Clone, Default)]
pub struct Diagnostics {
    fault: Arc<Mutex<Option<String>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    exit: Arc<Mutex<Option<ExitStatus>>>,
    /// Granted secrets' values, blanked out of what is described (a server may well log them).
    secrets: Arc<Vec<String>>,
}

impl Diagnostics {
    fn set_fault(&self, fault: String) {
        self.fault.lock().unwrap().get_or_insert(fault);
    }

    /// Why the server stopped being usable, as far as is known, with its stderr's tail.
    pub fn describe(&self) -> Option<String> {
        let fault = self.fault.lock().unwrap().clone();
        let exit = self.exit.lock().unwrap().map(|status| format!("it exited ({status})"));
        let tail = self.stderr_tail();
        let mut parts: Vec<String> = fault.into_iter().chain(exit).collect();
        if !tail.is_empty() {
            parts.push(format!("its stderr ends: {tail}"));
        }
        (!parts.is_empty()).then(|| redact(&parts.join("; "), &self.secrets))
    }

    fn stderr_tail(&self) -> String {
        let bytes = self.stderr.lock().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

/// `text` with every occurrence of a secret's value replaced.
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |text, secret| text.replace(secret.as_str(), "[secret]"))
}

/// A started server: its process, the protocol pipes and what it told us on the side.
pub struct ServerProcess {
    child: Option<Child>,
    group: i32,
    pub diagnostics: Diagnostics,
    /// The folder made for it when the agent named none, removed when it ends.
    _workdir: Option<tempfile::TempDir>,
}

/// Starts `argv` in `cwd` (a fresh temporary folder when none) with an empty environment plus
/// `PATH` and `env`, in a process group of its own.
pub fn start(
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
    secrets: &[String],
) -> Result<(ServerProcess, Pipes), String> {
    let workdir = match cwd {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("reagent-mcp-")
                .tempdir()
                .map_err(|e| format!("cannot create a working folder for it: {e}"))?,
        ),
    };
    let dir = cwd.or(workdir.as_ref().map(|w| w.path())).expect("a folder was made when none was named");
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("cannot start `{}`: not found on PATH", argv[0]),
        _ => format!("cannot start `{}`: {e}", argv[0]),
    })?;
    let group = child.id().map(|id| id as i32).unwrap_or(0);
    let diagnostics = Diagnostics { secrets: Arc::new(secrets.to_vec()), ..Diagnostics::default() };
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (messages, received) = mpsc::channel(64);
    tokio::spawn(read_messages(stdout, messages, diagnostics.clone()));
    let kept = diagnostics.stderr.clone();
    // Read to the end, whatever the volume: a server blocked on a full stderr pipe would hang.
    tokio::spawn(async move {
        let mut chunk = vec![0u8; 8 << 10];
        while let Ok(n) = stderr.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let mut tail = kept.lock().unwrap();
            tail.extend_from_slice(&chunk[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
    });
    let process = ServerProcess { child: Some(child), group, diagnostics, _workdir: workdir };
    Ok((process, Pipes { received, stdin: Arc::new(tokio::sync::Mutex::new(Some(stdin))) }))
}

impl ServerProcess {
    /// Records the exit status if the process has ended.
    pub fn reap(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            *self.diagnostics.exit.lock().unwrap() = Some(status);
        }
    }

    /// Ends the server as MCP asks (stdin closed, then SIGTERM, then SIGKILL), its whole group with
    /// it, and waits for it.
    pub async fn stop(mut self, pipes_closed: impl Future<Output = ()>) {
        pipes_closed.await;
        // The child stays in `self` until the end: if this is dropped half way (a runtime shutting
        // down), `drop` still kills the whole group.
        let Some(child) = self.child.as_mut() else { return };
        if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
            signal_group(self.group, libc::SIGTERM);
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                signal_group(self.group, libc::SIGKILL);
                let _ = child.wait().await;
            }
        }
        // Children it left behind in its group go too.
        signal_group(self.group, libc::SIGKILL);
        self.child = None;
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Not stopped in order (a run dropped mid-call): the group is killed; tokio reaps it.
            signal_group(self.group, libc::SIGKILL);
        }
    }
}

fn signal_group(group: i32, signal: i32) {
    if group > 0 {
        // SAFETY: kill(2) on a process group this process created; a stale group is ESRCH.
        unsafe { libc::kill(-group, signal) };
    }
}

/// Reads the server's stdout one message per line. Anything that is not a JSON-RPC message, or a
/// line over `MAX_MESSAGE`, is a fault: the pipe is closed and the fault says what was seen.
async fn read_messages(stdout: ChildStdout, messages: mpsc::Sender<ServerJsonRpcMessage>, diagnostics: Diagnostics) {
    let mut reader = BufReader::with_capacity(64 << 10, stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut reader, &mut line).await {
            Ok(false) => return,
            Ok(true) => {}
            Err(fault) => return diagnostics.set_fault(fault),
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<ServerJsonRpcMessage>(text) {
            Ok(message) => {
                if messages.send(message).await.is_err() {
                    return;
                }
            }
            Err(_) => {
                let shown: String = String::from_utf8_lossy(text).chars().take(QUOTED).collect();
                let what = match serde_json::from_slice::<serde_json::Value>(text) {
                    Ok(_) => "JSON that is not an MCP message",
                    Err(_) => "text that is not MCP",
                };
                return diagnostics.set_fault(format!(
                    "it wrote {what} on its stdout: {shown:?} (a stdio server must write only protocol there, and log to stderr)"
                ));
            }
        }
    }
}

/// Reads one line into `line`; false at the end of the stream.
async fn read_line(reader: &mut BufReader<ChildStdout>, line: &mut Vec<u8>) -> Result<bool, String> {
    loop {
        let buffer = reader.fill_buf().await.map_err(|e| format!("reading its stdout failed: {e}"))?;
        if buffer.is_empty() {
            return Ok(!line.is_empty());
        }
        let (taken, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (buffer.len(), false),
        };
        if line.len() + taken > MAX_MESSAGE + 1 {
            return Err(format!("it sent a message over {} MiB", MAX_MESSAGE >> 20));
        }
        line.extend_from_slice(&buffer[..taken]);
        reader.consume(taken);
        if done {
            return Ok(true);
        }
    }
}

/// The protocol side of the process, as rmcp's client drives it.
pub struct Pipes {
    received: mpsc::Receiver<ServerJsonRpcMessage>,
    stdin: Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
}

impl Transport<RoleClient> for Pipes {
    type Error = std::io::Error;

    fn send(&mut self, item: ClientJsonRpcMessage) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let stdin = self.stdin.clone();
        async move {
            let mut line = serde_json::to_vec(&item)?;
            line.push(b'\n');
            let mut stdin = stdin.lock().await;
            let Some(pipe) = stdin.as_mut() else {
                return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the server's stdin is closed"));
            };
            pipe.write_all(&line).await?;
            pipe.flush().await
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ServerJsonRpcMessage>> + Send {
        self.received.recv()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.received.close();
        let stdin = self.stdin.clone();
        async move {
            // Closing stdin is how a stdio server is told to exit.
            stdin.lock().await.take();
            Ok(())
        }
    }
}
