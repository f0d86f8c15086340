//! The seed corpus: real documents from the repository (the bundled requests and
//! policies) and, when present, the Beamline fixtures, so mutation starts from inputs that
//! reach deep into each parser rather than from noise. Files are read in sorted order, so
//! the same checkout and seed give the same run.

use std::path::{Path, PathBuf};

/// Documents by kind.
#[derive(Debug, Default)]
pub struct Corpus {
    /// DecideRequest bodies.
    pub requests: Vec<Vec<u8>>,
    /// Policy documents (JSON-DSL, legacy, mixed, store form).
    pub policies: Vec<Vec<u8>>,
}

impl Corpus {
    pub fn load() -> Corpus {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut corpus = Corpus::default();
        for file in files(&root.join("config/requests"), 1) {
            let Ok(text) = std::fs::read(&file) else {
                continue;
            };
            if file.extension().is_some_and(|e| e == "jsonl") {
                let lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty());
                corpus.requests.extend(lines.map(<[u8]>::to_vec));
            } else {
                corpus.requests.push(text);
            }
        }
        let mut policy_files = files(&root.join("config/policies"), 2);
        policy_files.extend(files(&compat_dir(&root).join("policies"), 1));
        for file in policy_files {
            if let Ok(text) = std::fs::read(&file) {
                corpus.policies.push(text);
            }
        }
        corpus.requests.push(DECIDE_FULL.to_vec());
        corpus.policies.push(STORE_FORM.to_vec());
        corpus
    }
}

/// Every field of a DecideRequest set, so mutation starts next to each check.
const DECIDE_FULL: &[u8] = br#"{"version":"1","request_id":"r-1","tenant_id":"acme",
"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","task":{"type":"chat","payload_ref":"s3://b/k",
"payload":{"messages":[{"role":"user","content":"hi \u00e9"}]}},"policy_id":"default",
"constraints":{"max_latency_ms":900,"max_cost":0.01,"exclude":["mistral"],"require":["vision"],
"only":["openai","anthropic"],"order":["anthropic"]},
"metadata":{"user_id":"u-42","tier":2,"beta":true,"none":null},
"attempt":{"previous_provider":"openai","status":"timeout","count":2},
"push_assignment":true,"assignment_subject":"caf.exec.assign.v1.eu",
"options":{"deadline_ms":4102444800000,"priority":"high"},"deadline":4102444800000,
"run_id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","flow_id":"01ARZ3NDEKTSV4RRFFQ69G5FAW",
"step_id":"01ARZ3NDEKTSV4RRFFQ69G5FAX","idempotency_key":"k-1","explain":true}"#;

/// The original's unversioned policy-store form.
const STORE_FORM: &[u8] = br#"{"policy_id":"default","tenant_id":"acme",
"weights":{"openai":0.7,"anthropic":0.3},"sticky":{"enabled":true,"ttl_sec":60}}"#;

/// `SHARDLINE_COMPAT_DIR`, else the shared checkout beside the repository.
fn compat_dir(root: &Path) -> PathBuf {
    std::env::var_os("SHARDLINE_COMPAT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/compat/beamline"))
}

/// `.json`/`.jsonl` files under `dir`, `depth` levels down, sorted.
fn files(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && depth > 1 {
            out.extend(files(&path, depth - 1));
        } else if path
            .extension()
            .is_some_and(|e| e == "json" || e == "jsonl")
        {
            out.push(path);
        }
    }
    out.sort();
    out
}
