//! The layering Cargo cannot see. Crate edges are the compiler's: `shardline-core` and
//! `shardline-tools` cannot name the router's library. Inside a crate any module may
//! name any other, and the core's manifest cannot forbid what std itself offers (a clock,
//! sockets, threads). These checks read the sources: the config describes settings and
//! names no transport (transports are built from it), and the core stays sans-IO.

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What the sans-IO core must never name: the runtime, a clock, sockets, threads.
const CORE_FORBIDDEN: [&str; 7] = [
    "glommio",
    "Instant",
    "SystemTime",
    "std::net",
    "std::thread",
    "TcpStream",
    "UdpSocket",
];

/// What the config must never name: the layers built from it.
const CONFIG_FORBIDDEN: [&str; 2] = ["crate::transport", "crate::server"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `file:line: text` for every code line (comments left out: a module's doc may say what
/// it does not use) that names one of `forbidden`.
fn mentions(text: &str, forbidden: &[&str]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if forbidden.iter().any(|word| code.contains(word)) {
            found.push((i + 1, line.trim().to_owned()));
        }
    }
    found
}

fn violations(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join(dir), &mut files);
    assert!(!files.is_empty(), "no sources under {dir}");
    let mut problems = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(ROOT).unwrap().display().to_string();
        for (line, code) in mentions(&text, forbidden) {
            problems.push(format!("{rel}:{line}: {code}"));
        }
    }
    problems
}

#[test]
fn the_config_names_no_transport() {
    let problems = violations("src/config", &CONFIG_FORBIDDEN);
    assert!(
        problems.is_empty(),
        "the config depends on a layer built from it:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_core_names_no_runtime_clock_socket_or_thread() {
    let problems = violations("core/src", &CORE_FORBIDDEN);
    assert!(
        problems.is_empty(),
        "the sans-IO core reaches for I/O:\n  {}",
        problems.join("\n  ")
    );
}

/// The scanner finds what it is meant to find, and not in comments.
#[test]
fn the_scanner_catches_mistakes() {
    let text = "//! no glommio here\nuse std::time::Instant;\nlet x = 1; // std::net\n\
                pub const A: usize = crate::transport::http::B;\n";
    assert_eq!(
        mentions(text, &CORE_FORBIDDEN),
        [(2, "use std::time::Instant;".into())]
    );
    assert_eq!(mentions(text, &CONFIG_FORBIDDEN).len(), 1);
}
