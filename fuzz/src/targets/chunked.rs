//! The chunked body decoder. Properties: the outcome (body, bytes used, or error) does not
//! depend on how the input was split across reads, and any data chunk-encoded with any
//! chunk sizes decodes back to itself.

use shardline::transport::http::{ChunkLimits, ChunkedDecoder, Progress};

use super::{ensure, variant, Checked, Target};
use crate::corpus::Corpus;
use crate::rng::Rng;

pub const TARGET: Target = Target {
    name: "chunked",
    what: "Transfer-Encoding: chunked body decoder (src/transport/http/chunked.rs)",
    generate,
    check,
    dictionary: &[
        b"\r\n",
        b"\n",
        b"0\r\n\r\n",
        b";ext=1",
        b";",
        b" ",
        b"\t",
        b"ffffffff",
        b"FFFF",
        b"0000000000000000001",
        b"X-Trailer: v\r\n",
        b"\r\n\r\n",
        b"10000000000000000",
    ],
};

/// Chunk-encodes `data` with random chunk sizes, extensions and trailers.
fn generate(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    let data: Vec<u8> = if rng.one_in(2) && !corpus.requests.is_empty() {
        rng.pick(&corpus.requests).clone()
    } else {
        (0..rng.below(300)).map(|_| rng.byte()).collect()
    };
    let mut out = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let size = rng.range(1, rest.len().min(64));
        push_size_line(rng, &mut out, size);
        out.extend_from_slice(&rest[..size]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[size..];
    }
    push_size_line(rng, &mut out, 0);
    for _ in 0..rng.below(3) {
        out.extend_from_slice(b"X-Check: ");
        out.extend_from_slice(&rng.below(1000).to_string().into_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if rng.one_in(4) {
        out.extend_from_slice(b"POST /v1/decide HTTP/1.1\r\n");
    }
    out
}

fn push_size_line(rng: &mut Rng, out: &mut Vec<u8>, size: usize) {
    let hex = match rng.below(3) {
        0 => format!("{size:X}"),
        1 => format!("{size:08x}"),
        _ => format!("{size:x}"),
    };
    out.extend_from_slice(hex.as_bytes());
    if rng.one_in(5) {
        out.extend_from_slice(b";name=value");
    }
    out.extend_from_slice(b"\r\n");
}

/// The outcome of feeding `input` to a fresh decoder, grown to each of `cuts` in turn (as
/// a connection sees its body arrive over several reads).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    result: String,
    body: Vec<u8>,
}

fn decode_in_pieces(input: &[u8], cuts: &[usize], limits: ChunkLimits) -> Outcome {
    let mut decoder = ChunkedDecoder::default();
    let mut body = Vec::new();
    for &cut in cuts {
        match decoder.decode(&input[..cut], &mut body, limits) {
            Ok(Progress::Incomplete) => continue,
            other => {
                return Outcome {
                    result: format!("{other:?}"),
                    body,
                }
            }
        }
    }
    Outcome {
        result: format!("{:?}", Ok::<_, ()>(Progress::Incomplete)),
        body,
    }
}

fn check(input: &[u8]) -> Checked {
    let mut rng = Rng::from_bytes(input);
    let limits = ChunkLimits {
        body_bytes_max: *rng.pick(&[0, 1, 16, 1000, 1 << 20]),
        trailer_bytes_max: *rng.pick(&[0, 8, 64, 16 * 1024]),
    };
    let whole = decode_in_pieces(input, &[input.len()], limits);
    let mut cuts: Vec<usize> = (0..rng.range(1, 8))
        .map(|_| rng.below(input.len() + 1))
        .collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let pieces = decode_in_pieces(input, &cuts, limits);
    ensure(whole == pieces, || {
        format!("split at {cuts:?} gives {pieces:?}, in one piece {whole:?} ({limits:?})")
    })?;
    ensure(whole.body.len() <= limits.body_bytes_max, || {
        format!("decoded {} bytes over {limits:?}", whole.body.len())
    })?;
    round_trip(&mut rng, input)?;
    let label = whole
        .result
        .trim_start_matches("Ok(")
        .trim_start_matches("Err(");
    Ok(variant(label))
}

/// `input` as data, chunk-encoded with sizes from `rng`, must decode back to itself.
fn round_trip(rng: &mut Rng, data: &[u8]) -> Result<(), String> {
    let mut encoded = Vec::with_capacity(data.len() + 64);
    let mut rest = data;
    while !rest.is_empty() {
        let size = rng.range(1, rest.len().min(4096));
        encoded.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        encoded.extend_from_slice(&rest[..size]);
        encoded.extend_from_slice(b"\r\n");
        rest = &rest[size..];
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    let limits = ChunkLimits {
        body_bytes_max: data.len(),
        trailer_bytes_max: 0,
    };
    let mut body = Vec::new();
    let result = ChunkedDecoder::default().decode(&encoded, &mut body, limits);
    let expected = Ok(Progress::Complete {
        encoded_len: encoded.len(),
    });
    ensure(result == expected && body == data, || {
        format!("round trip of {} bytes gave {result:?}", data.len())
    })
}
