//! `milvus://[user:password@]host:port/collection`: where a collection lives and how to log in.
//! Credentials come from the URL or from `SIMCASE_MILVUS_USER` / `SIMCASE_MILVUS_PASSWORD`, and
//! never leave this type except as the gRPC `authorization` header: `Display` and `Debug` show
//! no password, so URLs can go into logs and error messages.

use anyhow::{bail, Context, Result};

/// The scheme every Milvus index location starts with.
pub const SCHEME: &str = "milvus://";

/// A Milvus collection's location, with optional credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct MilvusUrl {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// gRPC port (Milvus's default is 19530).
    pub port: u16,
    /// Collection name.
    pub collection: String,
    creds: Option<Creds>,
}

#[derive(Clone, PartialEq, Eq)]
struct Creds {
    user: String,
    password: String,
}

impl MilvusUrl {
    /// Whether `s` names a Milvus collection rather than an index folder.
    pub fn is_milvus(s: &str) -> bool {
        s.starts_with(SCHEME)
    }

    /// Parse `milvus://[user:password@]host:port/collection` (user and password may be
    /// percent-encoded). Without credentials in the URL, `SIMCASE_MILVUS_USER` and
    /// `SIMCASE_MILVUS_PASSWORD` are used when set.
    pub fn parse(s: &str) -> Result<Self> {
        let mut url = Self::parse_only(s)?;
        if url.creds.is_none() {
            let user = std::env::var("SIMCASE_MILVUS_USER").ok();
            let password = std::env::var("SIMCASE_MILVUS_PASSWORD").ok();
            if user.is_some() || password.is_some() {
                url.creds = Some(Creds {
                    user: user.unwrap_or_else(|| "root".into()),
                    password: password.unwrap_or_default(),
                });
            }
        }
        Ok(url)
    }

    /// [`Self::parse`] without looking at the environment.
    pub fn parse_only(s: &str) -> Result<Self> {
        // The error never echoes `s`: it may carry a password.
        let bad = |why: &str| {
            anyhow::anyhow!(
                "bad Milvus URL: {why} (expected milvus://[user:password@]host:port/collection)"
            )
        };
        let Some(rest) = s.strip_prefix(SCHEME) else {
            return Err(bad("it does not start with milvus://"));
        };
        // The collection follows the last '/', credentials precede the last '@' before it:
        // a password may hold either character.
        let Some((authority, collection)) = rest.rsplit_once('/') else {
            return Err(bad("no /collection"));
        };
        check_collection_name(collection).map_err(|e| bad(&e))?;
        let (creds, hostport) = match authority.rsplit_once('@') {
            Some((c, h)) => {
                let (user, password) = c.split_once(':').unwrap_or((c, ""));
                let user = percent_decode(user).map_err(|e| bad(&format!("user name: {e}")))?;
                let password =
                    percent_decode(password).map_err(|e| bad(&format!("password: {e}")))?;
                if user.is_empty() {
                    return Err(bad("empty user name before '@'"));
                }
                (Some(Creds { user, password }), h)
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in host"))?;
            (h, p.strip_prefix(':').ok_or_else(|| bad("no :port"))?)
        } else {
            hostport.rsplit_once(':').ok_or_else(|| bad("no :port"))?
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(bad("the host holds characters a host name cannot"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port is not a number in 1..=65535"))?;
        Ok(Self {
            host: host.to_string(),
            port,
            collection: collection.to_string(),
            creds,
        })
    }

    /// The same server with another collection.
    pub fn with_collection(&self, collection: &str) -> Result<Self> {
        check_collection_name(collection)
            .map_err(|e| anyhow::anyhow!("bad Milvus collection name: {e}"))?;
        Ok(Self {
            collection: collection.to_string(),
            ..self.clone()
        })
    }

    /// The same location with these credentials (replacing any).
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.creds = Some(Creds {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// The gRPC endpoint, `http://host:port`.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }

    /// Whether credentials were given.
    pub fn has_credentials(&self) -> bool {
        self.creds.is_some()
    }

    /// The user name, when credentials were given.
    pub fn user(&self) -> Option<&str> {
        self.creds.as_ref().map(|c| c.user.as_str())
    }

    /// The value of the `authorization` header Milvus reads: base64 of `user:password`.
    pub(crate) fn authorization(&self) -> Option<String> {
        self.creds
            .as_ref()
            .map(|c| base64(format!("{}:{}", c.user, c.password).as_bytes()))
    }
}

impl std::fmt::Display for MilvusUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{SCHEME}[{}]:{}/{}",
                self.host, self.port, self.collection
            )
        } else {
            write!(f, "{SCHEME}{}:{}/{}", self.host, self.port, self.collection)
        }
    }
}

impl std::fmt::Debug for MilvusUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MilvusUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("collection", &self.collection)
            .field("user", &self.user())
            .field("password", &self.creds.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl std::str::FromStr for MilvusUrl {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Milvus's rule: a letter or underscore, then letters, digits and underscores, at most 255.
fn check_collection_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("empty collection name".into()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err("a collection name starts with a letter or '_'".into())
        }
        _ => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("a collection name holds only letters, digits and '_'".into());
    }
    if name.len() > 255 {
        return Err("a collection name has at most 255 characters".into());
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .context("'%' not followed by two hex digits")?;
            out.push(u8::from_str_radix(hex, 16).context("'%' not followed by two hex digits")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Ok(s),
        Err(_) => bail!("percent-encoding that is not UTF-8"),
    }
}

/// Standard base64 with padding (RFC 4648), for the one header that needs it.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_collection_and_credentials() {
        let u = MilvusUrl::parse_only("milvus://127.0.0.1:19530/cases").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.collection.as_str()),
            ("127.0.0.1", 19530, "cases")
        );
        assert!(!u.has_credentials());
        assert_eq!(u.to_string(), "milvus://127.0.0.1:19530/cases");
        assert_eq!(u.endpoint(), "http://127.0.0.1:19530");

        let u = MilvusUrl::parse_only("milvus://root:p%40ss/w@rd@db.example:1/_c1").unwrap();
        assert_eq!(u.user(), Some("root"));
        assert_eq!(u.host, "db.example");
        assert_eq!(u.authorization().unwrap(), base64(b"root:p@ss/w@rd"));
        assert_eq!(u.to_string(), "milvus://db.example:1/_c1");

        let u = MilvusUrl::parse_only("milvus://[::1]:19530/c").unwrap();
        assert_eq!(
            (u.host.as_str(), u.endpoint().as_str()),
            ("::1", "http://[::1]:19530")
        );
        assert_eq!(u.to_string(), "milvus://[::1]:19530/c");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_secrets() {
        for bad in [
            "http://h:1/c",
            "milvus://h/c",
            "milvus://h:0/c",
            "milvus://h:99999/c",
            "milvus://h:1/",
            "milvus://h:1/1abc",
            "milvus://h:1/a-b",
            "milvus://:1/c",
            "milvus://h h:1/c",
            "milvus://u:secretpw%zz@h:1/c",
            "milvus://:secretpw@h:1/c",
        ] {
            let e = MilvusUrl::parse_only(bad).unwrap_err().to_string();
            assert!(e.starts_with("bad Milvus URL: "), "{bad}: {e}");
            assert!(!e.contains("secretpw"), "{e}");
        }
    }

    #[test]
    fn display_and_debug_never_show_the_password() {
        let u = MilvusUrl::parse_only("milvus://alice:hunter2@h:1/c").unwrap();
        assert!(!u.to_string().contains("hunter2"));
        let d = format!("{u:?}");
        assert!(
            !d.contains("hunter2") && d.contains("<redacted>") && d.contains("alice"),
            "{d}"
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(b"root:Milvus"), "cm9vdDpNaWx2dXM=");
    }
}
