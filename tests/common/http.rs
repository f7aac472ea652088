//! A minimal HTTP/1.1 client for `http://HOST:PORT/path` URLs on loopback:
//! the scheduler's dashboard port (`/metrics`, `/api/...`), the workers'
//! metrics endpoints and a test's own Prometheus. One request per connection
//! (`Connection: close`), chunked bodies decoded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An HTTP response.
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET a URL, whatever the status; an error if it cannot be fetched (nothing
/// listens, no HTTP answer).
pub fn try_get(url: &str) -> Result<HttpResponse, String> {
    let fail = |e: &dyn std::fmt::Display| format!("GET {url}: {e}");
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not an http:// URL"))?;
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) => (host, format!("/{path}")),
        None => (rest, "/".to_string()),
    };
    let mut stream = TcpStream::connect(host).map_err(|e| fail(&e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| fail(&e))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| fail(&e))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| fail(&e))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fail(&"no HTTP header in the response"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail(&format!("bad status line in {head:?}")))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(|| fail(&"bad chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        content_type,
        body,
    })
}

/// GET a URL, whatever the status; panics if it cannot be fetched.
pub fn http_get_raw(url: &str) -> HttpResponse {
    try_get(url).unwrap_or_else(|e| panic!("{e}"))
}

/// GET a URL that must answer 200; the body, else what went wrong.
pub fn get_ok(url: &str) -> Result<String, String> {
    let response = try_get(url)?;
    match response.status {
        200 => Ok(response.text()),
        status => Err(format!(
            "GET {url}: HTTP {status}: {}",
            excerpt(&response.text(), 300)
        )),
    }
}

/// GET a URL that must answer 200; the body (panics otherwise).
pub fn http_get(url: &str) -> String {
    get_ok(url).unwrap_or_else(|e| panic!("{e}"))
}

/// GET a URL that must answer 200 with JSON.
pub fn get_json(url: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(url)).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        let chunk = body.get(eol + 2..eol + 2 + size)?;
        out.extend_from_slice(chunk);
        body = body.get(eol + 4 + size..)?;
    }
}

/// The first `max` characters of `text`, with `…` if cut.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Percent-encode a URL query value.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
