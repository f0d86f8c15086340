use super::*;

const LIMITS: ChunkLimits = ChunkLimits {
    body_bytes_max: 64,
    trailer_bytes_max: 32,
};

fn decode_all(input: &[u8], limits: ChunkLimits) -> Result<(Progress, Vec<u8>), ChunkError> {
    let mut decoder = ChunkedDecoder::default();
    let mut out = Vec::new();
    let progress = decoder.decode(input, &mut out, limits)?;
    Ok((progress, out))
}

#[test]
fn decodes_chunks_and_stops_at_the_end_of_the_body() {
    let body = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
    let mut input = body.to_vec();
    input.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let (progress, out) = decode_all(&input, LIMITS).unwrap();
    assert_eq!(out, b"Wikipedia");
    assert_eq!(
        progress,
        Progress::Complete {
            encoded_len: body.len()
        }
    );
}

/// A body that trickles in one byte per read decodes to the same bytes, and earlier bytes
/// are not decoded twice.
#[test]
fn resumes_across_reads() {
    let input = b"A;ext=\"v\"\r\n0123456789\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n";
    let mut decoder = ChunkedDecoder::default();
    let mut out = Vec::new();
    for end in 1..input.len() {
        let progress = decoder.decode(&input[..end], &mut out, LIMITS).unwrap();
        assert_eq!(progress, Progress::Incomplete, "at {end}");
    }
    let progress = decoder.decode(input, &mut out, LIMITS).unwrap();
    assert_eq!(
        progress,
        Progress::Complete {
            encoded_len: input.len()
        }
    );
    assert_eq!(out, b"0123456789!");
}

#[test]
fn uppercase_and_lowercase_hex_sizes() {
    let input = b"a\r\n0123456789\r\nB\r\n0123456789x\r\n0\r\n\r\n";
    let (_, out) = decode_all(input, LIMITS).unwrap();
    assert_eq!(out.len(), 21);
}

#[test]
fn malformed_chunks_are_refused() {
    let cases: [(&[u8], ChunkError); 8] = [
        (b"x\r\n", ChunkError::InvalidSize),
        (b";ext\r\n", ChunkError::InvalidSize),
        (b"4\nWiki\r\n", ChunkError::MissingCrlf),
        (b"4\r\nWikiX\r\n", ChunkError::MissingCrlf),
        (b"4\r\nWiki\r\r", ChunkError::MissingCrlf),
        (b"4\rX", ChunkError::MissingCrlf),
        (b"0\r\nX-T: 1\n", ChunkError::MissingCrlf),
        (b"4 z\x01\r\n", ChunkError::InvalidSize),
    ];
    for (input, wanted) in cases {
        assert_eq!(decode_all(input, LIMITS).unwrap_err(), wanted, "{input:?}");
    }
}

#[test]
fn sizes_and_lines_are_bounded() {
    let huge = b"11111111111111111\r\n";
    let limits = ChunkLimits {
        body_bytes_max: usize::MAX,
        ..LIMITS
    };
    assert_eq!(
        decode_all(huge, limits).unwrap_err(),
        ChunkError::InvalidSize
    );

    let mut long = b"1;".to_vec();
    long.resize(CHUNK_LINE_BYTES_MAX + 1, b'a');
    assert_eq!(
        decode_all(&long, LIMITS).unwrap_err(),
        ChunkError::LineTooLong
    );

    let mut trailers = b"0\r\n".to_vec();
    trailers.resize(3 + 33, b'a');
    let err = decode_all(&trailers, LIMITS).unwrap_err();
    assert_eq!(err, ChunkError::TrailersTooLarge { max: 32 });
}

/// The body limit is enforced from the declared sizes, before the data is even sent.
#[test]
fn body_limit_counts_every_chunk() {
    let too_big = b"41\r\n";
    let err = decode_all(too_big, LIMITS).unwrap_err();
    assert_eq!(err, ChunkError::BodyTooLarge { max: 64 });

    let mut two = b"20\r\n".to_vec();
    two.extend_from_slice(&[b'a'; 32]);
    two.extend_from_slice(b"\r\n21\r\n");
    let err = decode_all(&two, LIMITS).unwrap_err();
    assert_eq!(err, ChunkError::BodyTooLarge { max: 64 });

    let mut exact = b"40\r\n".to_vec();
    exact.extend_from_slice(&[b'a'; 64]);
    exact.extend_from_slice(b"\r\n0\r\n\r\n");
    let (_, out) = decode_all(&exact, LIMITS).unwrap();
    assert_eq!(out.len(), 64);
}

#[test]
fn reset_starts_a_new_body() {
    let mut decoder = ChunkedDecoder::default();
    let mut out = Vec::new();
    decoder
        .decode(b"1\r\na\r\n0\r\n\r\n", &mut out, LIMITS)
        .unwrap();
    decoder.reset();
    out.clear();
    let progress = decoder.decode(b"0\r\n\r\n", &mut out, LIMITS).unwrap();
    assert_eq!(progress, Progress::Complete { encoded_len: 5 });
    assert!(out.is_empty());
}
