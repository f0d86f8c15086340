//! One `GET /metrics` over plain `std::net`: `Connection: close`, read to the end, bounded
//! in time (connect, write and each read within `FETCH_TIMEOUT_MS`, the whole answer
//! within `FETCH_DEADLINE_MS`) and in size (`METRICS_ANSWER_BYTES_MAX`), so that a target
//! that is down, slow or not a router fails fast with a message saying which.
//!
//! Why not an HTTP client crate: one request per interval to a router on the same
//! network is all the view does; the answer is `Content-Length` framed or chunked, both a
//! few lines.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Bytes of one `/metrics` answer read at most (head and body): a router with 256 shards
/// renders well under this.
pub const METRICS_ANSWER_BYTES_MAX: usize = 16 << 20;
/// Connect, write and each read.
const FETCH_TIMEOUT_MS: u64 = 2000;
/// The whole answer, however slowly it trickles in.
const FETCH_DEADLINE_MS: u64 = 5000;
/// Characters of a target URL kept in messages.
const URL_SHOWN_CHARS: usize = 200;

/// Where to scrape: `http://HOST[:PORT][/PATH]`, the path `/metrics` when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    /// `HOST:PORT`, for the connection and the `Host` header.
    pub authority: String,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let shown: String = url.chars().take(URL_SHOWN_CHARS).collect();
        let bad = |why: &str| format!("target {shown:?}: {why}");
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            bad("give http://HOST:PORT (the router's ops or data listener; https is not supported)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
            return Err(bad("no HOST:PORT"));
        }
        let path = if path.is_empty() || path == "/" {
            "/metrics"
        } else {
            path
        };
        if path.contains([' ', '\r', '\n']) {
            return Err(bad("the path holds whitespace"));
        }
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(host, p)| !host.ends_with(':') && p.parse::<u16>().is_ok());
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            url: shown,
            authority,
            path: path.to_owned(),
        })
    }
}

/// The body of `GET target` when it answers 200; otherwise why not, naming the target.
pub fn fetch(target: &Target) -> Result<String, String> {
    let fail = |why: String| format!("cannot scrape {}: {why}", target.url);
    let timeout = Duration::from_millis(FETCH_TIMEOUT_MS);
    let addrs: Vec<_> = target
        .authority
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve {}: {e}", target.authority)))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(format!("cannot connect to {addr}: {e}")),
        }
    }
    let Some(mut stream) = stream else {
        return Err(fail(
            last.unwrap_or_else(|| "the host has no address".into()),
        ));
    };
    let io = |e: std::io::Error| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            fail(format!("no answer within {FETCH_TIMEOUT_MS} ms"))
        }
        _ => fail(e.to_string()),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let deadline = Instant::now() + Duration::from_millis(FETCH_DEADLINE_MS);
    let mut answer = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if Instant::now() > deadline {
            return Err(fail(format!(
                "the answer took longer than {FETCH_DEADLINE_MS} ms"
            )));
        }
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        if answer.len() + n > METRICS_ANSWER_BYTES_MAX {
            return Err(fail(format!(
                "answer larger than {METRICS_ANSWER_BYTES_MAX} bytes"
            )));
        }
        answer.extend_from_slice(&buf[..n]);
    }
    body(&answer).map_err(fail)
}

/// The body of a whole HTTP/1.1 answer (closed after): status 200 required,
/// `Content-Length` or chunked framing.
fn body(answer: &[u8]) -> Result<String, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete HTTP answer (not an HTTP server?)")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("not an HTTP answer")?;
    if status != 200 {
        let hint = if status == 404 {
            " (no /metrics here: give the router's ops or data listener)"
        } else {
            ""
        };
        return Err(format!("answered {status}{hint}"));
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| "a bad Content-Length")?);
        }
    }
    let mut rest = &answer[split + 4..];
    let bytes = if chunked {
        let mut out = Vec::new();
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("a truncated chunked body")?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]);
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| "a bad chunk size")?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size {
                return Err("a truncated chunked body".into());
            }
            out.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        out
    } else {
        match length {
            Some(n) if n > rest.len() => return Err("a truncated body".into()),
            Some(n) => rest[..n].to_vec(),
            None => rest.to_vec(),
        }
    };
    String::from_utf8(bytes).map_err(|_| "the body is not UTF-8 text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_default_to_metrics_and_port_80() {
        let t = Target::parse("http://127.0.0.1:9090").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:9090", "/metrics")
        );
        let t = Target::parse("http://router/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("router:80", "/metrics")
        );
        let t = Target::parse("http://[::1]:8080/custom").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("[::1]:8080", "/custom")
        );
        assert!(Target::parse("https://x:1")
            .unwrap_err()
            .contains("http://"));
        assert!(Target::parse("127.0.0.1:9090").is_err());
        assert!(Target::parse("http:///metrics").is_err());
    }

    #[test]
    fn bodies_by_length_or_chunks() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdEXTRA";
        assert_eq!(body(ok).unwrap(), "abcd");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(body(chunked).unwrap(), "abcde");
        assert!(body(b"HTTP/1.1 404 Not Found\r\n\r\n")
            .unwrap_err()
            .contains("404"));
        assert!(body(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
            .unwrap_err()
            .contains("truncated"));
        assert!(body(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(body(b"garbage").is_err());
    }
}
