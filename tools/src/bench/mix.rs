//! The request mix: which DecideRequest bodies the load generator sends.
//!
//! Either generated (`--tenants`, `--policy`, `--sticky-keys`, `--payload-bytes`) or read
//! from a JSON Lines file of DecideRequest bodies (`--requests`), cycled. Every body gets
//! a request id unique within the run (`b<thread>-<seq>`), so idempotency caches and logs
//! see distinct requests.
//!
//! Why templates: each body is split once, at start, into the bytes before and after its
//! `request_id` value; a request is then three copies and a number written into a reused
//! buffer — no JSON is built or parsed while the clock runs. Tenant and policy names are
//! restricted to the contract's id characters, so they never need JSON escaping.

use std::io::Read;
use std::path::Path;

use thiserror::Error;

/// Tenants in one generated mix.
pub const TENANTS_MAX: usize = 1024;
/// Bytes of a tenant or policy id (the contract's tenant id limit).
pub const ID_BYTES_MAX: usize = 64;
/// Distinct sticky session keys (`metadata.user_id` values).
pub const STICKY_KEYS_MAX: u32 = 10_000_000;
/// Bytes of a generated `task.payload` object (the router's default body limit).
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;
/// Bytes of a `--requests` file.
pub const REQUESTS_FILE_BYTES_MAX: u64 = 64 << 20;
/// Requests in a `--requests` file.
pub const REQUEST_LINES_MAX: usize = 100_000;
/// The smallest padded payload: `{"pad":""}`.
const PAYLOAD_BYTES_MIN: usize = 10;
/// Stands for the request id while a file's bodies are split into templates.
const ID_MARKER: &str = "@@shardline-bench-request-id@@";

/// Why a mix could not be built.
#[derive(Debug, Error)]
pub enum MixError {
    /// A tenant or policy id outside `[A-Za-z0-9_.-]{1,64}`.
    #[error("{what} {id:?}: ids are 1..={ID_BYTES_MAX} characters of A-Z a-z 0-9 _ . -")]
    BadId { what: &'static str, id: String },
    /// No tenant, or more than `TENANTS_MAX`.
    #[error("the mix needs 1..={TENANTS_MAX} tenants, got {0}")]
    Tenants(usize),
    #[error("--sticky-keys must be at most {STICKY_KEYS_MAX}, got {0}")]
    StickyKeys(u32),
    #[error("--payload-bytes must be at most {PAYLOAD_BYTES_MAX}, got {0}")]
    PayloadBytes(usize),
    /// The requests file could not be read.
    #[error("{path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// The file is larger than `REQUESTS_FILE_BYTES_MAX`, or has too many lines.
    #[error("{path}: more than {REQUESTS_FILE_BYTES_MAX} bytes or {REQUEST_LINES_MAX} requests")]
    TooLarge { path: String },
    /// A line is not a JSON object.
    #[error("{path}:{line}: not a JSON object ({reason})")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    /// The file holds no request.
    #[error("{path}: no request in the file")]
    Empty { path: String },
}

/// What to generate when no requests file is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub tenants: Vec<String>,
    pub policy: String,
    /// 0 = no `metadata`; else `metadata.user_id` drawn from `u-0 … u-(N-1)`.
    pub sticky_keys: u32,
    /// 0 = `task.payload_ref`; else a `task.payload` object padded to this many bytes
    /// (at least 10).
    pub payload_bytes: usize,
}

/// One body split around its request id.
#[derive(Debug, Clone)]
struct Template {
    /// The body's `tenant_id`, sent again as a header where the transport has them (NATS).
    tenant: Option<String>,
    before_id: Vec<u8>,
    /// Up to the end of the body, or up to its closing `}` when a user id follows.
    after_id: Vec<u8>,
}

/// The bodies to send, ready to be stamped with request ids.
#[derive(Debug, Clone)]
pub struct Mix {
    templates: Vec<Template>,
    sticky_keys: u32,
}

fn check_id(what: &'static str, id: &str) -> Result<(), MixError> {
    let ok = (1..=ID_BYTES_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(MixError::BadId {
            what,
            id: id.chars().take(ID_BYTES_MAX * 2).collect(),
        })
    }
}

impl Mix {
    /// Generated bodies: one template per tenant, in the order given.
    pub fn generated(spec: &Generated) -> Result<Mix, MixError> {
        if spec.tenants.is_empty() || spec.tenants.len() > TENANTS_MAX {
            return Err(MixError::Tenants(spec.tenants.len()));
        }
        if spec.sticky_keys > STICKY_KEYS_MAX {
            return Err(MixError::StickyKeys(spec.sticky_keys));
        }
        if spec.payload_bytes > PAYLOAD_BYTES_MAX {
            return Err(MixError::PayloadBytes(spec.payload_bytes));
        }
        check_id("policy", &spec.policy)?;
        let task = task_json(spec.payload_bytes);
        let mut templates = Vec::with_capacity(spec.tenants.len());
        for tenant in &spec.tenants {
            check_id("tenant", tenant)?;
            let mut after = format!(
                r#"","tenant_id":"{tenant}","policy_id":"{}","task":{task}"#,
                spec.policy
            );
            if spec.sticky_keys == 0 {
                after.push('}');
            }
            templates.push(Template {
                tenant: Some(tenant.clone()),
                before_id: br#"{"request_id":""#.to_vec(),
                after_id: after.into_bytes(),
            });
        }
        Ok(Mix {
            templates,
            sticky_keys: spec.sticky_keys,
        })
    }

    /// Bodies from a JSON Lines file (blank lines skipped); each line's `request_id` is
    /// replaced (or added) per request.
    pub fn from_file(path: &Path) -> Result<Mix, MixError> {
        let name = path.display().to_string();
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(REQUESTS_FILE_BYTES_MAX + 1)
                    .read_to_string(&mut text)
            })
            .map_err(|error| MixError::Read {
                path: name.clone(),
                error,
            })?;
        if text.len() as u64 > REQUESTS_FILE_BYTES_MAX {
            return Err(MixError::TooLarge { path: name });
        }
        let mut templates = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if templates.len() == REQUEST_LINES_MAX {
                return Err(MixError::TooLarge { path: name });
            }
            let template = template_of(line).map_err(|reason| MixError::Line {
                path: name.clone(),
                line: i + 1,
                reason,
            })?;
            templates.push(template);
        }
        if templates.is_empty() {
            return Err(MixError::Empty { path: name });
        }
        Ok(Mix {
            templates,
            sticky_keys: 0,
        })
    }

    /// Distinct bodies before request ids (tenants, or lines of the file).
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

/// `{"type":"chat","payload_ref":…}` or a payload object padded to `payload_bytes`.
fn task_json(payload_bytes: usize) -> String {
    if payload_bytes == 0 {
        return r#"{"type":"chat","payload_ref":"s3://bench/payload.json"}"#.to_owned();
    }
    let pad = payload_bytes.max(PAYLOAD_BYTES_MIN) - PAYLOAD_BYTES_MIN;
    format!(
        r#"{{"type":"chat","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(pad)
    )
}

fn template_of(line: &str) -> Result<Template, String> {
    let mut value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let object = value.as_object_mut().ok_or("not an object")?;
    let tenant = object
        .get("tenant_id")
        .and_then(|t| t.as_str())
        .map(str::to_owned);
    object.insert("request_id".into(), ID_MARKER.into());
    let body = serde_json::to_string(&value).map_err(|e| e.to_string())?;
    let quoted = format!("\"{ID_MARKER}\"");
    let at = body.find(&quoted).ok_or("request id not placed")?;
    if body[at + quoted.len()..].contains(ID_MARKER) {
        return Err("the body contains the bench's request id marker".into());
    }
    Ok(Template {
        tenant,
        before_id: body.as_bytes()[..at + 1].to_vec(),
        after_id: body.as_bytes()[at + quoted.len() - 1..].to_vec(),
    })
}

/// One thread's position in the mix: which template, which id, which session key.
#[derive(Debug, Clone)]
pub struct MixCursor {
    thread: usize,
    seq: u64,
    rng: u64,
}

impl MixCursor {
    /// Thread `thread`'s cursor; the session keys it draws depend only on `thread`.
    pub fn new(thread: usize) -> MixCursor {
        MixCursor {
            thread,
            seq: 0,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (thread as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
        }
    }

    /// Writes the next body into `out` (cleared first).
    pub fn next_body(&mut self, mix: &Mix, out: &mut Vec<u8>) {
        self.write_body(mix, out);
    }

    /// Writes the next body into `out` (cleared first) and its trace id (32 hex
    /// characters, unique within the run) into `trace_id`; returns the body's tenant,
    /// when it names one.
    pub fn next_request<'m>(
        &mut self,
        mix: &'m Mix,
        out: &mut Vec<u8>,
        trace_id: &mut String,
    ) -> Option<&'m str> {
        use std::fmt::Write as _;
        trace_id.clear();
        // Writing into a String cannot fail.
        let _ = write!(trace_id, "{:08x}{:024x}", self.thread as u32, self.seq);
        self.write_body(mix, out)
    }

    fn write_body<'m>(&mut self, mix: &'m Mix, out: &mut Vec<u8>) -> Option<&'m str> {
        use std::io::Write as _;
        let template = &mix.templates[(self.seq % mix.templates.len() as u64) as usize];
        out.clear();
        out.extend_from_slice(&template.before_id);
        // Writing into a Vec cannot fail.
        let _ = write!(out, "b{}-{}", self.thread, self.seq);
        out.extend_from_slice(&template.after_id);
        if mix.sticky_keys > 0 {
            let key = self.next_random() % u64::from(mix.sticky_keys);
            let _ = write!(out, r#","metadata":{{"user_id":"u-{key}"}}}}"#);
        }
        self.seq += 1;
        template.tenant.as_deref()
    }

    /// splitmix64: cheap, seeded per thread, good enough to spread session keys.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_core::contract::{decode_decide, Headers};

    fn spec() -> Generated {
        Generated {
            tenants: vec!["tenant-0".into(), "tenant-1".into()],
            policy: "default".into(),
            sticky_keys: 10,
            payload_bytes: 0,
        }
    }

    fn bodies(mix: &Mix, thread: usize, n: usize) -> Vec<serde_json::Value> {
        let mut cursor = MixCursor::new(thread);
        let mut out = Vec::new();
        (0..n)
            .map(|_| {
                cursor.next_body(mix, &mut out);
                serde_json::from_slice(&out).expect("valid JSON")
            })
            .collect()
    }

    /// Generated bodies cycle the tenants, carry unique ids and keys from the pool, and
    /// pass the router's own request decoder.
    #[test]
    fn generated_bodies_are_valid_and_distinct() {
        let mix = Mix::generated(&spec()).unwrap();
        let all = bodies(&mix, 3, 40);
        assert_eq!(all[0]["tenant_id"], "tenant-0");
        assert_eq!(all[1]["tenant_id"], "tenant-1");
        assert_eq!(all[0]["request_id"], "b3-0");
        assert_eq!(all[39]["request_id"], "b3-39");
        let ids: std::collections::HashSet<_> =
            all.iter().map(|b| b["request_id"].clone()).collect();
        assert_eq!(ids.len(), 40);
        let users: std::collections::HashSet<_> = all
            .iter()
            .map(|b| b["metadata"]["user_id"].clone())
            .collect();
        assert!(users.len() > 1 && users.len() <= 10, "{users:?}");
        let mut cursor = MixCursor::new(0);
        let mut out = Vec::new();
        cursor.next_body(&mix, &mut out);
        assert!(decode_decide(&out, &Headers::default()).is_ok());
    }

    /// Each request names its body's tenant (for the `tenant_id` header) and carries a
    /// distinct 32-hex trace id; a file line without a tenant gives none.
    #[test]
    fn requests_name_their_tenant_and_trace() {
        let mix = Mix::generated(&spec()).unwrap();
        let mut cursor = MixCursor::new(5);
        let (mut body, mut trace) = (Vec::new(), String::new());
        assert_eq!(
            cursor.next_request(&mix, &mut body, &mut trace),
            Some("tenant-0")
        );
        let first = trace.clone();
        assert_eq!(
            cursor.next_request(&mix, &mut body, &mut trace),
            Some("tenant-1")
        );
        assert_eq!(trace.len(), 32);
        assert!(trace.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, trace);
        assert_eq!(template_of(r#"{"task":{}}"#).unwrap().tenant, None);
    }

    /// `--payload-bytes` pads `task.payload` to exactly that many bytes.
    #[test]
    fn payload_is_padded_to_size() {
        let mix = Mix::generated(&Generated {
            sticky_keys: 0,
            payload_bytes: 500,
            ..spec()
        })
        .unwrap();
        let body = &bodies(&mix, 0, 1)[0];
        assert_eq!(body["task"]["payload"].to_string().len(), 500);
        assert!(body.get("metadata").is_none());
    }

    /// Ids that would need escaping (or break the contract) are refused up front.
    #[test]
    fn refuses_bad_ids() {
        let bad = Generated {
            tenants: vec!["a\"b".into()],
            ..spec()
        };
        assert!(matches!(Mix::generated(&bad), Err(MixError::BadId { .. })));
        let none = Generated {
            tenants: vec![],
            ..spec()
        };
        assert!(matches!(Mix::generated(&none), Err(MixError::Tenants(0))));
    }

    /// File lines keep their fields; only the request id changes, and lines cycle.
    #[test]
    fn file_templates_replace_the_request_id() {
        let dir = std::env::temp_dir().join(format!("shardline-mix-{}", std::process::id()));
        std::fs::write(
            &dir,
            concat!(
                r#"{"request_id":"x","tenant_id":"acme","task":{"type":"chat","payload_ref":"p"}}"#,
                "\n\n",
                r#"{"tenant_id":"globex","task":{"type":"chat","payload_ref":"q"}}"#,
                "\n"
            ),
        )
        .unwrap();
        let mix = Mix::from_file(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(mix.len(), 2);
        let all = bodies(&mix, 1, 3);
        assert_eq!(all[0]["tenant_id"], "acme");
        assert_eq!(all[0]["request_id"], "b1-0");
        assert_eq!(all[1]["tenant_id"], "globex");
        assert_eq!(all[1]["request_id"], "b1-1");
        assert_eq!(all[2]["tenant_id"], "acme");
        assert_eq!(all[2]["task"]["payload_ref"], "p");
    }
}
