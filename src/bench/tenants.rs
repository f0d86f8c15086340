//! Learning a running router's tenants, so that a generated mix without `--tenants` asks
//! for tenants that exist: `GET /v1/tenants` on the target, one short blocking request
//! before the run. Guessing instead (the old `tenant-0..3`) turned every request into a
//! `policy_not_found` and the run into a measurement of the error path.
//!
//! Plain `std::net` with `Connection: close`: one request, read to the end, bounded in
//! time (`TENANTS_TIMEOUT_MS` for connect, write and each read) and in size
//! (`TENANTS_BODY_BYTES_MAX`), so a target that is not a router fails fast and clearly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::mix::TENANTS_MAX;
use super::BenchError;

/// Bytes of the `GET /v1/tenants` answer read at most (headers and body).
pub const TENANTS_ANSWER_BYTES_MAX: usize = 4 << 20;
/// Connect, write and each read of the listing request.
const TENANTS_TIMEOUT_MS: u64 = 2000;

/// The tenant ids the router at `addr` lists (at most `TENANTS_MAX`, in its order).
pub fn learn(url: &str, addr: SocketAddr, host: &str) -> Result<Vec<String>, BenchError> {
    let fail = |reason: String| BenchError::Tenants {
        url: url.to_owned(),
        reason,
    };
    let timeout = Duration::from_millis(TENANTS_TIMEOUT_MS);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            fail(format!("no answer within {TENANTS_TIMEOUT_MS} ms"))
        }
        _ => fail(e.to_string()),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!(
        "GET /v1/tenants HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(TENANTS_ANSWER_BYTES_MAX as u64 + 1)
        .read_to_end(&mut answer)
        .map_err(io)?;
    if answer.len() > TENANTS_ANSWER_BYTES_MAX {
        return Err(fail(format!(
            "answer larger than {TENANTS_ANSWER_BYTES_MAX} bytes"
        )));
    }
    parse(&answer).map_err(fail)
}

/// The ids of a whole HTTP answer (`Content-Length` framed, closed after).
fn parse(answer: &[u8]) -> Result<Vec<String>, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete HTTP answer")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("not an HTTP answer")?;
    if status != 200 {
        let hint = if status == 404 {
            " (a router without the listing, or not a router)"
        } else {
            ""
        };
        return Err(format!("answered {status}{hint}"));
    }
    let body: serde_json::Value = serde_json::from_slice(&answer[split + 4..])
        .map_err(|e| format!("the answer is not JSON: {e}"))?;
    let ids = body["tenants"]
        .as_array()
        .ok_or("the answer has no \"tenants\" array")?;
    let ids: Vec<String> = ids
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .take(TENANTS_MAX)
        .collect();
    if ids.is_empty() {
        return Err("the router has no tenant (no policy loaded)".into());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_ids_and_refuses_the_rest() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"ok\":true,\"tenants\":[\"acme\",\"globex\"]}";
        assert_eq!(parse(ok).unwrap(), ["acme", "globex"]);
        let missing = b"HTTP/1.1 404 Not Found\r\n\r\n{}";
        assert!(parse(missing).unwrap_err().contains("404"));
        let empty = b"HTTP/1.1 200 OK\r\n\r\n{\"ok\":true,\"tenants\":[]}";
        assert!(parse(empty).unwrap_err().contains("no tenant"));
        assert!(parse(b"garbage").is_err());
    }
}
