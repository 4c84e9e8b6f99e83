//! Raw HTTP/1.1 over a fresh TCP connection for the soak: any headers (forged ones included),
//! `Connection: close`, the status read back; and a slow client that sends half its headers
//! and holds the connection open.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Send one request and read the whole answer; its status, or the I/O error.
pub(crate) fn exchange(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    let mut head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if let Some(b) = body {
        // The server may answer early (413, 401) and stop reading; its answer still counts.
        let _ = s.write_all(b);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 64 << 20 {
                    break;
                }
            }
            Err(e) if buf.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "no status line in {:?}",
                    line.chars().take(80).collect::<String>()
                ),
            )
        })
}

/// Open a connection, send half a request's headers, and hold it until `until` or until the
/// server closes it; true when the server closed it first.
pub(crate) fn slow_client(addr: &str, host: &str, until: Instant) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(addr)?;
    s.write_all(format!("GET /api/stats HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").as_bytes())?;
    s.set_read_timeout(Some(Duration::from_millis(250)))?;
    let mut b = [0u8; 512];
    while Instant::now() < until {
        match s.read(&mut b) {
            Ok(0) => return Ok(true),
            Ok(_) => {} // an early answer (408): keep reading until it closes
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // One more byte now and then, as a slowloris does.
                if s.write_all(b"a").is_err() {
                    return Ok(true);
                }
            }
            Err(_) => return Ok(true),
        }
    }
    Ok(false)
}
