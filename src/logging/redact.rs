//! Keeping secrets out of log lines (SPEC §8).
//!
//! Two mechanisms: a structured field whose key names a secret is never formatted at all
//! (`is_sensitive_key`), and free text (messages, field values) is scanned for the shapes
//! a secret takes when someone formats a header, a query string or a JSON body into a
//! message (`redact_into`): `Bearer <x>`, `<key>=<x>`, `<key>: <x>`, `"<key>":"<x>"` and
//! the user-info of a URL (`nats://user:pass@host`).
//!
//! Why a hand-written scanner and not a regex crate: the shapes are few and fixed, the
//! scanner is one pass with no allocation beyond the output, and a dependency on a regex
//! engine would be the largest thing in the logger. It errs on the side of redacting:
//! `token expired: abc` loses `abc`, which is cheaper than leaking a credential.

/// What a redacted value is replaced with, in every format.
pub const REDACTED: &str = "[REDACTED]";

/// A key containing one of these (case-insensitive, `-` read as `_`) names a secret.
const SENSITIVE_PARTS: [&str; 9] = [
    "api_key",
    "apikey",
    "token",
    "authorization",
    "password",
    "passwd",
    "secret",
    "cookie",
    "private_key",
];

/// Keys that contain `token` but count LLM tokens; redacting them would hide usage data.
/// Exact matches only, so `tokens` (a list of admin tokens) stays redacted.
const NOT_SECRET_KEYS: [&str; 6] = [
    "max_tokens",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
];

/// Authentication schemes whose next word is the credential: `Authorization: Bearer x`.
const AUTH_SCHEMES: [&str; 2] = ["bearer", "basic"];

fn normalized(b: u8) -> u8 {
    match b.to_ascii_lowercase() {
        b'-' => b'_',
        other => other,
    }
}

fn matches_at(window: &[u8], pattern: &str) -> bool {
    window.len() == pattern.len()
        && window
            .iter()
            .zip(pattern.bytes())
            .all(|(a, p)| normalized(*a) == p)
}

/// Whether a field or key named `key` holds a secret and must be written as `REDACTED`.
pub fn is_sensitive_key(key: &str) -> bool {
    let key = key.as_bytes();
    if NOT_SECRET_KEYS.iter().any(|k| matches_at(key, k)) {
        return false;
    }
    SENSITIVE_PARTS
        .iter()
        .any(|part| key.windows(part.len()).any(|w| matches_at(w, part)))
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Bytes that end an unquoted value.
fn ends_bare_value(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b',' | b';' | b'&' | b'"' | b'\'' | b')' | b']' | b'}')
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

fn bare_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !ends_bare_value(b[i]) {
        i += 1;
    }
    i
}

/// The end of a quoted value opened at `open` (exclusive of the closing quote), honouring
/// backslash escapes; the end of the text if the quote is never closed.
fn quoted_end(b: &[u8], open: usize) -> usize {
    let quote = b[open];
    let mut i = open + 1;
    while i < b.len() && b[i] != quote {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i.min(b.len())
}

/// If `b[start..]` is an auth scheme followed by blanks, the index of the credential.
fn after_scheme(b: &[u8], start: usize) -> Option<usize> {
    let end = start + b[start..].iter().take_while(|c| is_word_byte(**c)).count();
    let word = &b[start..end];
    let is_scheme = AUTH_SCHEMES
        .iter()
        .any(|s| word.eq_ignore_ascii_case(s.as_bytes()));
    let credential = skip_spaces(b, end);
    (is_scheme && credential > end && credential < b.len()).then_some(credential)
}

/// The span of the value that follows a sensitive key ending at `key_end`, if the key is
/// followed by `=` or `:` (after an optional closing quote and blanks).
fn value_after_key(b: &[u8], key_end: usize) -> Option<(usize, usize)> {
    let mut i = key_end;
    if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
        i += 1;
    }
    i = skip_spaces(b, i);
    if i >= b.len() || (b[i] != b'=' && b[i] != b':') {
        return None;
    }
    i = skip_spaces(b, i + 1);
    if i >= b.len() || matches!(b[i], b'{' | b'[') {
        // A nested object or list: its own keys are scanned as the text goes on.
        return None;
    }
    if b[i] == b'"' || b[i] == b'\'' {
        let end = quoted_end(b, i);
        return (end > i + 1).then_some((i + 1, end));
    }
    let start = after_scheme(b, i).unwrap_or(i);
    let end = bare_end(b, start);
    (end > start).then_some((start, end))
}

/// The span of the secret introduced by the word `b[start..end]`, if any.
fn secret_after_word(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    if text[start..end].eq_ignore_ascii_case("bearer") {
        let credential = after_scheme(b, start)?;
        let stop = bare_end(b, credential);
        return (stop > credential).then_some((credential, stop));
    }
    if is_sensitive_key(&text[start..end]) {
        return value_after_key(b, end);
    }
    None
}

/// The user-info span of a URL whose `://` ends at `i`: `user:pass` in
/// `nats://user:pass@host`.
fn userinfo_after(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    while j < b.len() && !matches!(b[j], b'/' | b'?' | b'#' | b'@') && !ends_bare_value(b[j]) {
        j += 1;
    }
    (j < b.len() && b[j] == b'@' && j > i).then_some((i, j))
}

/// Appends `text` to `out` with every recognised secret replaced by `REDACTED`.
pub fn redact_into(text: &str, out: &mut String) {
    let b = text.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let mut span = None;
        let mut next = i + 1;
        if is_word_byte(b[i]) && (i == 0 || !is_word_byte(b[i - 1])) {
            let end = i + b[i..].iter().take_while(|c| is_word_byte(**c)).count();
            span = secret_after_word(text, i, end);
            next = end;
        } else if b[i..].starts_with(b"://") {
            span = userinfo_after(b, i + 3);
            next = i + 3;
        }
        if let Some((start, end)) = span {
            // Every span boundary sits next to an ASCII byte, so slicing is on a char
            // boundary.
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = end;
            next = end;
        }
        i = next;
    }
    out.push_str(&text[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        let mut out = String::new();
        redact_into(text, &mut out);
        out
    }

    #[test]
    fn sensitive_keys_case_and_dash_insensitive() {
        for key in [
            "api_key",
            "X-Api-Key",
            "APIKEY",
            "token",
            "refresh_token",
            "Authorization",
            "db_password",
            "passwd",
            "client_secret",
            "Set-Cookie",
            "private_key",
            "tokens",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in [
            "tenant_id",
            "trace_id",
            "max_tokens",
            "Total-Tokens",
            "msg",
            "key",
        ] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }

    #[test]
    fn bearer_credentials() {
        assert_eq!(
            redact("got Bearer abc.def-1 ok"),
            "got Bearer [REDACTED] ok"
        );
        assert_eq!(
            redact("Authorization: Bearer abc123"),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            redact("authorization=Basic dXNlcjpwYXNz"),
            "authorization=Basic [REDACTED]"
        );
        // A bare `Bearer` with nothing after it is left alone.
        assert_eq!(redact("Bearer"), "Bearer");
    }

    #[test]
    fn key_value_shapes() {
        assert_eq!(redact("token=abc&x=1"), "token=[REDACTED]&x=1");
        assert_eq!(
            redact("password: hunter2, user=bob"),
            "password: [REDACTED], user=bob"
        );
        assert_eq!(redact("--admin-token=s3cr3t"), "--admin-token=[REDACTED]");
        assert_eq!(redact("no secrets here: x=1"), "no secrets here: x=1");
        assert_eq!(redact("token expired"), "token expired");
        assert_eq!(redact("max_tokens=512"), "max_tokens=512");
        assert_eq!(redact("password="), "password=");
    }

    #[test]
    fn json_shapes() {
        assert_eq!(
            redact(r#"{"api_key":"sk-123","model":"gpt"}"#),
            r#"{"api_key":"[REDACTED]","model":"gpt"}"#
        );
        assert_eq!(
            redact(r#"{"token" : "a\"b", "n": 1}"#),
            r#"{"token" : "[REDACTED]", "n": 1}"#
        );
        assert_eq!(redact(r#"{"secret": 12345}"#), r#"{"secret": [REDACTED]}"#);
        assert_eq!(redact("{'password': 'x y'}"), "{'password': '[REDACTED]'}");
        // Nested values: the inner keys are found as the scan goes on.
        assert_eq!(
            redact(r#"{"tokens":[{"token":"t1"}]}"#),
            r#"{"tokens":[{"token":"[REDACTED]"}]}"#
        );
        // An unterminated quoted secret is redacted to the end.
        assert_eq!(redact(r#""password":"abc"#), r#""password":"[REDACTED]"#);
    }

    #[test]
    fn url_userinfo() {
        assert_eq!(
            redact("connecting to nats://bob:pw@10.0.0.1:4222 now"),
            "connecting to nats://[REDACTED]@10.0.0.1:4222 now"
        );
        assert_eq!(
            redact("see https://example.com/a@b"),
            "see https://example.com/a@b"
        );
        assert_eq!(redact("tls://host:4222"), "tls://host:4222");
    }

    /// Non-ASCII text around secrets survives intact (slicing stays on char boundaries).
    #[test]
    fn unicode_is_preserved() {
        assert_eq!(
            redact("ключ token=секрет ok ✓"),
            "ключ token=[REDACTED] ok ✓"
        );
        assert_eq!(redact("✓✓"), "✓✓");
    }
}
