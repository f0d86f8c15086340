//! `Request`: one parsed request, borrowing everything from the connection's buffers.
//!
//! Why borrowed: the request head stays in the read buffer and the body in the read buffer
//! (or the connection's chunked-body buffer), so handing a request to the `Service` copies
//! nothing and allocates nothing. The request lives until the `Service` has answered.

/// A header as parsed: the name as sent, the value as raw bytes.
pub type Header<'a> = httparse::Header<'a>;

/// The request method. Methods the router does not route are `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is `Other`.
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }

    /// The method's token; `OTHER` for methods the router does not route.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

/// One complete request, with its body decoded.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: Method,
    /// The request target up to `?` (`/v1/decide`); for `OPTIONS *` and absolute-form
    /// targets, the target as sent.
    pub path: &'a str,
    /// What follows `?`, without it; `None` when there is no `?`.
    pub query: Option<&'a str>,
    /// All headers, in the order sent.
    pub headers: &'a [Header<'a>],
    /// The body: `Content-Length` bytes, or the decoded chunks.
    pub body: &'a [u8],
    /// Whether the client keeps the connection open after this request (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
}

impl<'a> Request<'a> {
    /// The first header named `name` (ASCII case-insensitive) whose value is UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        header_str(self.headers, name)
    }
}

/// `Request::header` over a header slice, for the parser's own use.
pub(crate) fn header_str<'a>(headers: &'a [Header<'a>], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .find_map(|h| std::str::from_utf8(h.value).ok())
}

/// Splits a request target into path and query.
pub(crate) fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case_and_skips_non_utf8() {
        let headers = [
            Header {
                name: "X-Bin",
                value: b"\xff\xfe",
            },
            Header {
                name: "x-tenant-id",
                value: b"acme",
            },
            Header {
                name: "x-bin",
                value: b"ok",
            },
        ];
        let req = Request {
            method: Method::Get,
            path: "/",
            query: None,
            headers: &headers,
            body: b"",
            keep_alive: true,
            minor_version: 1,
        };
        assert_eq!(req.header("X-Tenant-ID"), Some("acme"));
        assert_eq!(req.header("x-bin"), Some("ok"));
        assert_eq!(req.header("missing"), None);
    }

    #[test]
    fn target_splits_at_the_first_question_mark() {
        assert_eq!(split_target("/v1/decide"), ("/v1/decide", None));
        assert_eq!(split_target("/a?b=1?c"), ("/a", Some("b=1?c")));
        assert_eq!(split_target("/a?"), ("/a", Some("")));
        assert_eq!(Method::from_token("get"), Method::Other);
    }
}
