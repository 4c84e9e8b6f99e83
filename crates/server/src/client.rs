//! A minimal blocking HTTP/1.1 client over one keep-alive connection, for the API tests and
//! the load generator (`simcase bench serve`); no TLS, loopback use only.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One keep-alive connection to a simcase server, with an optional bearer token.
pub struct Client {
    addr: String,
    token: Option<String>,
    conn: Option<BufReader<TcpStream>>,
}

/// A response: status, content type and the whole body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The `Retry-After` header (sent with 503 when the decode budget is full).
    pub retry_after: Option<String>,
}

impl Reply {
    /// The body parsed as JSON (an error quotes the body).
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "status {}: not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A multipart/form-data body with one file field named `file`: (content type, body).
pub fn multipart_file(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "simcase-boundary-7d93a1c2";
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Client {
    /// `addr`: `host:port`.
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            token: None,
            conn: None,
        }
    }

    /// Send `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Result<Reply> {
        self.send("GET", path, None)
    }

    /// `POST path` with a body.
    pub fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Result<Reply> {
        self.send("POST", path, Some((content_type, body)))
    }

    /// One request; a connection the server closed is reopened once.
    pub fn send(&mut self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<Reply> {
        match self.try_send(method, path, body) {
            Ok(r) => Ok(r),
            Err(_) if self.conn.is_none() => self.try_send(method, path, body),
            Err(e) => Err(e),
        }
    }

    fn try_send(&mut self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<Reply> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr)
                .with_context(|| format!("connecting to {}", self.addr))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(120)))?;
            self.conn = Some(BufReader::new(s));
        }
        let r = self.exchange(method, path, body);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn exchange(&mut self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<Reply> {
        let conn = self.conn.as_mut().context("not connected")?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some((ty, b)) = body {
            head.push_str(&format!(
                "Content-Type: {ty}\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let s = conn.get_mut();
        s.write_all(head.as_bytes())?;
        if let Some((_, b)) = body {
            // The server may answer early (e.g. 413) and close; the reply still counts.
            let _ = s.write_all(b);
        }
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            self.conn = None;
            bail!("connection closed");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut len, mut chunked, mut close, mut ty) = (None, false, false, String::new());
        let mut retry_after = None;
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    "content-type" => ty = v.to_string(),
                    "retry-after" => retry_after = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).context("bad chunk size")?;
                let mut chunk = vec![0u8; n + 2];
                conn.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = len {
            body.resize(n, 0);
            conn.read_exact(&mut body)?;
        } else {
            conn.read_to_end(&mut body)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(Reply {
            status,
            content_type: ty,
            body,
            retry_after,
        })
    }
}
