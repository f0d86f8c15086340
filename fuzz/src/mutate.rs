//! Byte-level mutations of a structured input: what turns a valid request into the
//! almost-valid ones that parsers get wrong (a digit more, a CRLF less, a key twice).

use crate::rng::Rng;

/// Inputs never grow past this, so one input cannot take long or use much memory.
pub const INPUT_BYTES_MAX: usize = 256 * 1024;

/// Bytes that matter to the formats fuzzed here, tried in place of random bytes.
const SPECIAL: &[u8] = b"\r\n\t :;,\"\\{}[]0019aAfF.-+eE\x00\x7f\xff";

/// Numbers at the edges of the ranges the decoders check.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "0.5",
    "1.0",
    "1.0000001",
    "100",
    "101",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1e308",
    "1e309",
    "-1e-320",
    "0x10",
    "ffffffffffffffff",
    "10000000000000000",
];

/// Applies 1 to 4 random mutations; `dictionary` holds tokens of the input's format and
/// `donors` other inputs to splice from.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, dictionary: &[&[u8]], donors: &[Vec<u8>]) {
    for _ in 0..rng.range(1, 4) {
        mutate_once(rng, input, dictionary, donors);
    }
    input.truncate(INPUT_BYTES_MAX);
}

fn mutate_once(rng: &mut Rng, input: &mut Vec<u8>, dictionary: &[&[u8]], donors: &[Vec<u8>]) {
    let len = input.len();
    let at = if len == 0 { 0 } else { rng.below(len + 1) };
    match rng.below(11) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = *rng.pick(SPECIAL);
        }
        2 if len > 0 => {
            let end = (at + rng.range(1, 16)).min(len);
            input.drain(at.min(end)..end);
        }
        3 => {
            let token = *rng.pick(dictionary);
            input.splice(at..at, token.iter().copied());
        }
        4 if len > 0 => {
            // Repeat a slice (a header twice, a chunk twice, a key twice).
            let start = rng.below(len);
            let end = (start + rng.range(1, 64)).min(len);
            let copy = input[start..end].to_vec();
            for _ in 0..rng.range(1, 3) {
                input.splice(at..at, copy.iter().copied());
            }
        }
        5 if len > 0 => input.truncate(rng.below(len)),
        6 => replace_number(rng, input),
        7 if !donors.is_empty() => {
            let donor = rng.pick(donors);
            if !donor.is_empty() {
                let start = rng.below(donor.len());
                let end = (start + rng.range(1, 256)).min(donor.len());
                input.splice(at..at, donor[start..end].iter().copied());
            }
        }
        8 => {
            let n = rng.range(1, 8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            input.splice(at..at, bytes);
        }
        9 if len > 0 => {
            // A long run: bounds are where overflow and off-by-one bugs live.
            let byte = input[rng.below(len)];
            let n = *rng.pick(&[64, 1000, 1024, 1025, 4096, 4097, 16384, 70000]);
            input.splice(at..at, std::iter::repeat_n(byte, n));
        }
        _ => {
            let token = *rng.pick(dictionary);
            if len > 0 && !token.is_empty() {
                let end = (at + token.len()).min(len);
                input.splice(at.min(end)..end, token.iter().copied());
            } else {
                input.extend_from_slice(token);
            }
        }
    }
}

/// Replaces a run of ASCII digits with an edge-case number (or appends one).
fn replace_number(rng: &mut Rng, input: &mut Vec<u8>) {
    let number = rng.pick(NUMBERS).as_bytes();
    let digits: Vec<usize> = (0..input.len())
        .filter(|&i| input[i].is_ascii_digit() && (i == 0 || !input[i - 1].is_ascii_digit()))
        .collect();
    if digits.is_empty() {
        input.extend_from_slice(number);
        return;
    }
    let start = *rng.pick(&digits);
    let end = (start..input.len())
        .find(|&i| !input[i].is_ascii_digit())
        .unwrap_or(input.len());
    input.splice(start..end, number.iter().copied());
}
