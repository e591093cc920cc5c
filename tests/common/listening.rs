//! A server process a test starts and talks to: ready once its stderr says so, killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Listening(Child);

impl Listening {
    /// Starts `command` with stderr piped and waits for a line of it containing `ready`.
    pub fn start(command: &mut Command, ready: &str) -> Self {
        let mut child = command.stderr(Stdio::piped()).spawn().expect("start the server");
        let stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        for line in stderr.lines() {
            if line.expect("read the server's stderr").contains(ready) {
                break;
            }
        }
        Listening(child)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
