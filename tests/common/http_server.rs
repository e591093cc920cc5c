//! A small HTTP/1.1 server on 127.0.0.1 for tests: a real socket, real requests, canned routes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A route's response: status, extra headers, body.
pub type Route = (u16, Vec<(String, String)>, String);

pub struct TestServer {
    pub address: SocketAddr,
    /// The request lines received, e.g. `GET /hello HTTP/1.1`.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Serves `routes` (path → response) until the runtime shuts down; unknown paths get 404.
    pub async fn start(routes: HashMap<String, Route>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let address = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let routes = Arc::new(routes);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let routes = routes.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 16 * 1024];
                    let mut received = Vec::new();
                    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&received).into_owned();
                    let request_line = head.lines().next().unwrap_or_default().to_string();
                    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    seen.lock().unwrap().push(request_line);
                    let (status, headers, body) =
                        routes.get(&path).cloned().unwrap_or((404, Vec::new(), "not found".into()));
                    let mut response =
                        format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
                    for (name, value) in headers {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(&body);
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        TestServer { address, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

pub fn route(status: u16, headers: &[(&str, &str)], body: &str) -> Route {
    (status, headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(), body.to_string())
}
