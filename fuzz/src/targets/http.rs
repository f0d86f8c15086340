//! The HTTP/1.1 request parser. Properties: a request split across any reads parses as it
//! does in one piece (same request, same length, or the same error), a complete request
//! never claims more bytes than it was given, its body respects the limit, and whatever
//! follows it (pipelining) parses too.

use std::mem::MaybeUninit;

use shardline::transport::http::{
    parse_request, ChunkedDecoder, Header, HttpLimits, Parsed, HEADERS_CEILING_MAX,
};

use super::{ensure, variant, Checked, Target};
use crate::corpus::Corpus;
use crate::rng::Rng;

pub const TARGET: Target = Target {
    name: "http",
    what: "HTTP/1.1 request parser (src/transport/http/parse.rs)",
    generate,
    check,
    dictionary: &[
        b"\r\n",
        b"\r\n\r\n",
        b"\n",
        b"Host: h\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 0\r\n",
        b"Content-Length: +5\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Connection: close\r\n",
        b"Connection: keep-alive\r\n",
        b"Expect: 100-continue\r\n",
        b"HTTP/1.0",
        b"HTTP/1.1",
        b"POST /v1/decide HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"0\r\n\r\n",
        b"5\r\nhello\r\n",
        b" ",
        b":",
    ],
};

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "get", "P OST",
];
const TARGETS: &[&str] = &[
    "/v1/decide",
    "/v1/results",
    "/healthz",
    "/readyz",
    "/metrics",
    "/admin/v1/policies/acme/default",
    "/v1/decide?explain=1&x",
    "*",
    "http://h:8080/v1/decide",
    "/%00/..",
];
const CONNECTION: [&str; 3] = ["close", "keep-alive", "Upgrade, close"];
const VERSIONS: &[&str] = &[
    "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1",
];

/// A request or a few pipelined ones, framed by Content-Length, chunked, or nothing.
fn generate(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.range(1, 3) {
        push_request(rng, corpus, &mut out);
    }
    out
}

fn push_request(rng: &mut Rng, corpus: &Corpus, out: &mut Vec<u8>) {
    let eol: &[u8] = if rng.one_in(20) { b"\n" } else { b"\r\n" };
    let body: Vec<u8> = match rng.below(4) {
        0 => Vec::new(),
        1 if !corpus.requests.is_empty() => rng.pick(&corpus.requests).clone(),
        _ => (0..rng.below(200)).map(|_| rng.byte()).collect(),
    };
    let line = format!(
        "{} {} {}",
        rng.pick(METHODS),
        rng.pick(TARGETS),
        rng.pick(VERSIONS)
    );
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(eol);
    let header = |out: &mut Vec<u8>, name: &str, value: &str| {
        out.extend_from_slice(format!("{name}: {value}").as_bytes());
        out.extend_from_slice(eol);
    };
    if !rng.one_in(10) {
        header(out, "Host", "router.local");
    }
    let chunked = rng.one_in(3);
    if chunked {
        let value = *rng.pick(&[
            "chunked",
            "chunked",
            "Chunked ",
            "gzip, chunked",
            "identity",
        ]);
        header(out, "Transfer-Encoding", value);
    }
    if !chunked || rng.one_in(10) {
        let length = body.len().to_string();
        let value = match rng.below(8) {
            0 => "abc".to_owned(),
            1 => format!("{length}, {length}"),
            2 => format!(" {length} "),
            _ => length,
        };
        header(out, "Content-Length", &value);
        if rng.one_in(10) {
            header(out, "Content-Length", &(body.len() + 1).to_string());
        }
    }
    if rng.one_in(3) {
        header(out, "Connection", CONNECTION[rng.below(CONNECTION.len())]);
    }
    if rng.one_in(5) {
        header(out, "Expect", "100-continue");
    }
    for i in 0..rng.below(6) {
        header(out, &format!("X-Extra-{i}"), "v");
    }
    if rng.one_in(20) {
        for i in 0..rng.range(60, 140) {
            header(out, &format!("X-Many-{i}"), "v");
        }
    }
    out.extend_from_slice(eol);
    if chunked {
        let mut rest = &body[..];
        while !rest.is_empty() {
            let size = rng.range(1, rest.len().min(50));
            out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..size]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(&body);
    }
}

/// A parse result, owned, so results of different calls can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Partial {
        expects_continue: bool,
    },
    Complete {
        len: usize,
        method: String,
        path: String,
        query: Option<String>,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        keep_alive: bool,
        minor_version: u8,
    },
    Error(String),
}

/// One `parse_request` call, as a connection makes it with its carried state.
fn parse_once(
    buf: &[u8],
    limits: &HttpLimits,
    decoder: &mut ChunkedDecoder,
    body: &mut Vec<u8>,
) -> Outcome {
    let mut headers: Vec<MaybeUninit<Header<'_>>> = (0..limits.headers_max)
        .map(|_| MaybeUninit::uninit())
        .collect();
    match parse_request(buf, &mut headers, limits, decoder, body) {
        Ok(Parsed::Partial { expects_continue }) => Outcome::Partial { expects_continue },
        Ok(Parsed::Complete { request, len }) => Outcome::Complete {
            len,
            method: request.method.as_str().to_owned(),
            path: request.path.to_owned(),
            query: request.query.map(str::to_owned),
            headers: request
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            body: request.body.to_vec(),
            keep_alive: request.keep_alive,
            minor_version: request.minor_version,
        },
        Err(err) => Outcome::Error(format!("{err:?}")),
    }
}

/// Feeds growing prefixes of `buf` (ending at each of `cuts`) until the parser decides.
fn parse_in_pieces(buf: &[u8], cuts: &[usize], limits: &HttpLimits) -> Outcome {
    let mut decoder = ChunkedDecoder::default();
    let mut body = Vec::new();
    let mut outcome = Outcome::Partial {
        expects_continue: false,
    };
    for &cut in cuts {
        outcome = parse_once(&buf[..cut], limits, &mut decoder, &mut body);
        if !matches!(outcome, Outcome::Partial { .. }) {
            break;
        }
    }
    outcome
}

fn check(input: &[u8]) -> Checked {
    let mut rng = Rng::from_bytes(input);
    let limits = HttpLimits {
        headers_max: *rng.pick(&[1, 4, 64, HEADERS_CEILING_MAX]),
        header_bytes_max: *rng.pick(&[32, 512, 16 * 1024]),
        body_bytes_max: *rng.pick(&[0, 10, 1000, 1 << 20]),
        ..HttpLimits::default()
    };
    let whole = parse_in_pieces(input, &[input.len()], &limits);
    let mut cuts: Vec<usize> = (0..rng.range(1, 6))
        .map(|_| rng.below(input.len() + 1))
        .collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let pieces = parse_in_pieces(input, &cuts, &limits);
    ensure(whole == pieces, || {
        format!("split at {cuts:?}: {pieces:?}\nin one piece: {whole:?}\n{limits:?}")
    })?;
    let label = match &whole {
        Outcome::Partial { .. } => "Partial".to_owned(),
        Outcome::Complete { .. } => "Complete".to_owned(),
        Outcome::Error(e) => format!("Err({})", variant(e)),
    };
    // Pipelining: what follows a complete request parses too, each from a fresh state.
    let mut at = 0;
    let mut outcome = whole;
    for _ in 0..8 {
        let Outcome::Complete { len, body, .. } = &outcome else {
            break;
        };
        ensure(*len > 0 && at + len <= input.len(), || {
            format!("a request at {at} claims {len} of {} bytes", input.len())
        })?;
        ensure(body.len() <= limits.body_bytes_max, || {
            format!("a body of {} bytes over {limits:?}", body.len())
        })?;
        at += len;
        outcome = parse_in_pieces(&input[at..], &[input.len() - at], &limits);
    }
    Ok(label)
}
