//! The defences of `simcase serve` against a foreign web page and hostile clients, tested on
//! the real binary with forged headers over raw sockets: DNS rebinding (a foreign `Host`),
//! no token, cross-origin requests, missing security headers, slow clients and connection
//! floods (issue 10, item 4 and the timeouts of item 3).

mod common;
use common::*;
use simcase_server::client::{multipart_file, Client};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A small index (8 labelled images of dev.csv), built once per test binary.
fn index() -> PathBuf {
    static INDEX: OnceLock<PathBuf> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let dir = tmp("serve-security").keep(); // shared by this binary's tests
            let m = manifest(&dir, 8, 97, 0);
            let index = dir.join("index");
            index_manifest(&index, &m);
            index
        })
        .clone()
}

struct Server {
    _srv: Served,
    addr: String,
    port: u16,
    log: PathBuf,
    /// The second line printed: `open http://ADDR/#token=...`.
    page: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let index = index();
        let log = index.with_extension(format!(
            "log-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let srv = serve(&index, extra, &log);
        let port = srv.addr.rsplit_once(':').unwrap().1.parse().unwrap();
        Self {
            addr: srv.addr.clone(),
            page: srv.page.clone(),
            _srv: srv,
            port,
            log,
        }
    }

    /// The generated token, from the page URL the server printed.
    fn token(&self) -> String {
        let t = self
            .page
            .split_once("#token=")
            .unwrap_or_else(|| panic!("no token in {:?}", self.page))
            .1;
        assert!(
            t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit()),
            "{t}"
        );
        t.to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A reply read off a raw socket: status, lower-cased headers, body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("{}: not JSON: {}", self.status, self.text()))
    }
}

/// Send `head` (request line and headers, without the blank line; `Connection: close` is
/// added) and `body` over a fresh connection; read the whole reply.
fn raw(addr: &str, head: &str, body: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = head.replace('\n', "\r\n");
    req.push_str("\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    parse(&all)
}

fn parse(all: &[u8]) -> Raw {
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no reply head in {:?}", String::from_utf8_lossy(all)));
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = all[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let (mut out, mut rest) = (Vec::new(), body.as_slice());
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 4 + n..];
        }
        body = out;
    }
    Raw {
        status: status.parse().unwrap(),
        headers,
        body,
    }
}

/// DNS rebinding: a page on attacker.example rebinds its name to 127.0.0.1, so the browser
/// sends `Host: attacker.example:PORT`. Every route refuses it, token or not; the bound
/// address, `localhost` and `--allow-host` names are served.
#[test]
fn a_foreign_host_is_refused_on_page_api_and_thumbnail() {
    let srv = Server::start(&["--allow-host", "simcase.test"]);
    let (addr, port, token) = (&srv.addr, srv.port, srv.token());
    let auth = format!("Authorization: Bearer {token}");
    let paths = [
        "/",
        "/app.js",
        "/healthz",
        "/api/stats",
        "/api/search?id=0&k=3",
        "/api/items/0",
        "/api/items/0/thumbnail",
    ];
    for path in paths {
        let evil = raw(
            addr,
            &format!("GET {path} HTTP/1.1\nHost: attacker.example:{port}\n{auth}"),
            b"",
        );
        assert_eq!(evil.status, 403, "{path}: {}", evil.text());
        let err = evil.json()["error"].as_str().unwrap().to_string();
        assert!(
            err.contains("attacker.example") && err.contains("--allow-host"),
            "{err}"
        );
        assert!(!evil.text().contains("items"), "{path}: no data");
        for host in [
            addr.to_string(),
            format!("localhost:{port}"),
            format!("simcase.test:{port}"),
        ] {
            let ok = raw(
                addr,
                &format!("GET {path} HTTP/1.1\nHost: {host}\n{auth}"),
                b"",
            );
            assert_eq!(ok.status, 200, "{path} as {host}: {}", ok.text());
        }
    }
    // The right port only, and the target's own authority counts too.
    for (head, want) in [
        (
            format!(
                "GET /api/stats HTTP/1.1\nHost: 127.0.0.1:{}\n{auth}",
                port ^ 1
            ),
            403,
        ),
        (
            format!("GET /api/stats HTTP/1.1\nHost: localhost\n{auth}"),
            403,
        ),
        (
            format!("GET http://attacker.example:{port}/api/stats HTTP/1.1\nHost: {addr}\n{auth}"),
            403,
        ),
        (format!("GET /api/stats HTTP/1.1\n{auth}"), 400),
        (format!("GET /api/stats HTTP/1.0\n{auth}"), 400),
    ] {
        let r = raw(addr, &head, b"");
        assert_eq!(r.status, want, "{head}: {}", r.text());
    }
    let log = srv.log();
    assert!(
        log.contains("GET /api/stats -> 403"),
        "refusals are logged:\n{log}"
    );
}

/// A token is required by default, on loopback too: generated at start-up, printed with the
/// page URL, different every start; `--no-token` opts out (on loopback only).
#[test]
fn a_token_is_generated_and_required_by_default_on_loopback() {
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    let token = a.token();
    assert_ne!(token, b.token(), "each start draws a new token");
    assert_eq!(a.page, format!("open http://{}/#token={token}", a.addr));
    assert!(a.log().contains(&format!("#token={token}")), "logged too");
    drop(b);

    for path in [
        "/api/stats",
        "/api/search?id=0&k=3",
        "/api/items/0/thumbnail",
    ] {
        assert_eq!(
            Client::new(&a.addr).get(path).unwrap().status,
            401,
            "{path}"
        );
        let wrong = Client::new(&a.addr)
            .with_token(&token[..63])
            .get(path)
            .unwrap();
        assert_eq!(wrong.status, 401, "{path}: a prefix of the token");
        let ok = Client::new(&a.addr).with_token(&token).get(path).unwrap();
        assert_eq!(ok.status, 200, "{path}: {}", ok.text());
    }
    // The page and the liveness check hold no data and need none.
    let mut anon = Client::new(&a.addr);
    assert_eq!(anon.get("/").unwrap().status, 200);
    assert_eq!(anon.get("/healthz").unwrap().status, 200);

    let open = Server::start(&["--no-token"]);
    assert!(open.page.contains("no token"), "{}", open.page);
    let r = Client::new(&open.addr).get("/api/stats").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let out = bin()
        .args(["serve", "--no-token", "--bind", "0.0.0.0:0", "--index"])
        .arg(index())
        .env_remove("SIMCASE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success(), "--no-token off loopback must refuse");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-token is for loopback only"));
}

/// A foreign page's requests (multipart POSTs need no preflight; GETs can spend CPU) are
/// refused by their `Origin` or `Sec-Fetch-Site`; the page's own requests and clients that
/// send neither (curl, the CLI) are served.
#[test]
fn cross_origin_requests_are_refused() {
    let srv = Server::start(&[]);
    let (addr, token) = (&srv.addr, srv.token());
    let auth = format!("Authorization: Bearer {token}");
    let (ty, body) = multipart_file("q.png", &tiny_png());
    let post = |extra: &str| {
        raw(
            addr,
            &format!(
                "POST /api/search?k=3 HTTP/1.1\nHost: {addr}\n{auth}\nContent-Type: {ty}\n\
                 Content-Length: {}{extra}",
                body.len()
            ),
            &body,
        )
    };
    for (extra, want) in [
        ("\nOrigin: http://evil.example", 403),
        ("\nOrigin: null", 403),
        (
            &*format!("\nOrigin: http://{addr}\nSec-Fetch-Site: cross-site"),
            403,
        ),
        ("\nSec-Fetch-Site: same-site", 403),
        (
            &*format!("\nOrigin: http://{addr}\nSec-Fetch-Site: same-origin"),
            200,
        ),
        ("", 200),
    ] {
        let r = post(extra);
        assert_eq!(r.status, want, "POST with {extra:?}: {}", r.text());
        if want == 403 {
            assert!(r.json()["error"].as_str().unwrap().contains("cross-origin"));
        } else {
            assert_eq!(r.json()["query"]["kind"], "upload");
        }
    }
    let get = |extra: &str| {
        raw(
            addr,
            &format!("GET /api/search?id=0&k=3 HTTP/1.1\nHost: {addr}\n{auth}{extra}"),
            b"",
        )
        .status
    };
    assert_eq!(get("\nSec-Fetch-Site: cross-site"), 403);
    assert_eq!(get("\nOrigin: http://evil.example"), 403);
    assert_eq!(get("\nSec-Fetch-Site: same-origin"), 200);
    assert_eq!(get("\nSec-Fetch-Site: none"), 200);
    assert_eq!(get(""), 200);
    // A link from another site may open the page itself (it holds no data).
    let nav = raw(
        addr,
        &format!("GET / HTTP/1.1\nHost: {addr}\nSec-Fetch-Site: cross-site"),
        b"",
    );
    assert_eq!(nav.status, 200);
}

/// CSP, nosniff, no-referrer and frame denial on the page, its assets, the API (data, errors
/// and thumbnails alike); and the page has no inline script or style that the CSP would block.
#[test]
fn security_headers_on_every_response() {
    let srv = Server::start(&[]);
    let (addr, token) = (&srv.addr, srv.token());
    let csp = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; \
               frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
    for (path, auth, want) in [
        ("/", true, 200),
        ("/app.js", false, 200),
        ("/style.css", false, 200),
        ("/api/stats", true, 200),
        ("/api/items/0/thumbnail", true, 200),
        ("/api/stats", false, 401),
        ("/api/nosuch", true, 404),
        ("/nosuch", false, 404),
    ] {
        let a = if auth {
            format!("\nAuthorization: Bearer {token}")
        } else {
            String::new()
        };
        let r = raw(addr, &format!("GET {path} HTTP/1.1\nHost: {addr}{a}"), b"");
        assert_eq!(r.status, want, "{path}");
        for (h, v) in [
            ("content-security-policy", csp),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
        ] {
            assert_eq!(r.header(h), Some(v), "{path}: {h}");
        }
        assert!(r.header("set-cookie").is_none(), "{path}: no cookies");
    }
    let html = raw(addr, &format!("GET / HTTP/1.1\nHost: {addr}"), b"").text();
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<style"), "inline <style>");
    assert!(!lower.contains(" style="), "inline style attribute");
    for tag in lower.split('<').skip(1) {
        let tag = &tag[..tag.find('>').unwrap()];
        assert!(
            !tag.split_whitespace()
                .any(|attr| attr.starts_with("on") && attr.contains('=')),
            "inline event handler: <{tag}>"
        );
    }
    for tag in lower.split("<script").skip(1) {
        let open = &tag[..tag.find('>').unwrap()];
        assert!(open.contains("src="), "inline script: <script{open}>");
        assert!(tag[tag.find('>').unwrap() + 1..].starts_with("</script>"));
    }
}

/// A client that sends half a request head and stalls (slowloris) is dropped after the
/// header timeout, and one that stalls in its body gets 408 after the body timeout; others
/// are served meanwhile.
#[test]
fn slow_clients_are_dropped_while_others_are_served() {
    let srv = Server::start(&["--header-timeout", "2", "--body-timeout", "2"]);
    let (addr, token) = (srv.addr.clone(), srv.token());
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(format!("GET /api/stats HTTP/1.1\r\nHost: {addr}\r\nX-Slow:").as_bytes())
        .unwrap();
    let mut body_slow = TcpStream::connect(&addr).unwrap();
    body_slow
        .write_all(
            format!(
                "POST /api/search HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let t = Instant::now();
    let mut c = Client::new(&addr).with_token(&token);
    for _ in 0..5 {
        assert_eq!(c.get("/api/stats").unwrap().status, 200);
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "served while they stall"
    );

    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let r = slow.read_to_end(&mut got);
    let dropped = t.elapsed();
    assert!(r.is_ok(), "the connection was not closed: {r:?}");
    assert!(
        dropped >= Duration::from_millis(1500) && dropped < Duration::from_secs(10),
        "dropped after {dropped:?}"
    );
    if !got.is_empty() {
        assert_eq!(parse(&got).status, 408, "{}", String::from_utf8_lossy(&got));
    }

    body_slow
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let _ = body_slow.read_to_end(&mut got);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let r = parse(&got);
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("body"));
    assert_eq!(c.get("/api/stats").unwrap().status, 200);
}

/// `--max-connections N`: N idle connections hold every slot, so the next client waits (it
/// is not served); once they close, it is answered and the server serves on.
#[test]
fn a_connection_flood_waits_and_the_server_answers_once_it_closes() {
    let srv = Server::start(&["--max-connections", "3", "--header-timeout", "60"]);
    let (addr, token) = (srv.addr.clone(), srv.token());
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let (tx, rx) = std::sync::mpsc::channel();
    let (a, t) = (addr.clone(), token.clone());
    std::thread::spawn(move || {
        let r = Client::new(&a).with_token(&t).get("/api/stats");
        let _ = tx.send(r.map(|r| r.status).map_err(|e| e.to_string()));
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "a 4th connection was served while 3 held the slots"
    );
    drop(idle);
    let status = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("not answered after the flood closed");
    assert_eq!(status, Ok(200));
    // And many more connections than slots, one after another, all answered.
    for _ in 0..20 {
        let r = Client::new(&addr)
            .with_token(&token)
            .get("/healthz")
            .unwrap();
        assert_eq!(r.status, 200);
    }
}

/// A valid 16×16 grey PNG of 100-odd bytes: small enough that a refused upload is read whole
/// by the server (a large unread body would make its close a reset that can eat the reply).
fn tiny_png() -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..16u8 {
        raw.push(0); // filter: none
        raw.extend((0..16u8).map(|x| x * 8 + y * 4));
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    let mut ihdr = 16u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&16u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", b"");
    png
}

/// CRC-32 (IEEE), as PNG chunks carry it.
/// `--max-uploads N`: N uploads whose bodies stall hold every permit, so the next upload waits
/// a few seconds and gets 503 with Retry-After (its body never held in memory); searches by id
/// are served meanwhile, and uploads are served again once the stalled ones end.
#[test]
fn uploads_beyond_the_cap_get_503_and_searches_go_on() {
    let srv = Server::start(&["--max-uploads", "1", "--body-timeout", "30"]);
    let (addr, token) = (srv.addr.clone(), srv.token());
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(
            format!(
                "POST /api/search HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Client::new(&addr).with_token(&token);
    let (ty, body) = multipart_file("q.png", &tiny_png());
    let t = Instant::now();
    let r = c.post("/api/search?k=2", &ty, &body).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.retry_after.is_some(), "no Retry-After");
    assert!(r.json().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("uploads in flight"));
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(c.get("/api/search?id=0&k=2").unwrap().status, 200);
    drop(stalled);
    std::thread::sleep(Duration::from_millis(300));
    let r = c.post("/api/search?k=2", &ty, &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}
