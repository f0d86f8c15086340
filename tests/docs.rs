//! The documentation cannot rot silently: every limit constant is in the architecture's
//! limits table with its current value, and every documented `shardline` command, flag
//! and script exists.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Scripts the docs may name before they exist in this tree: the NATS and certificate
/// tooling is built alongside the NATS transport and lands with it.
const SCRIPTS_LANDING_WITH_NATS: [&str; 5] = [
    "scripts/nats_start.sh",
    "scripts/nats_status.sh",
    "scripts/nats_stop.sh",
    "scripts/generate_certs.sh",
    "scripts/validate_nats_tls.sh",
];

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

/// Every `pub const NAME_MAX: T = EXPR;` in src/, core/src/, shards/src/ and tools/src/:
/// (name, file, expr).
fn limit_constants() -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    rust_files(&Path::new(ROOT).join("core/src"), &mut files);
    rust_files(&Path::new(ROOT).join("shards/src"), &mut files);
    rust_files(&Path::new(ROOT).join("tools/src"), &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let rel = file
            .strip_prefix(ROOT)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for (i, line) in text.lines().enumerate() {
            let Some(rest) = line.trim_start().strip_prefix("pub const ") else {
                continue;
            };
            let Some((name, _)) = rest.split_once(':') else {
                continue;
            };
            if !name.ends_with("_MAX") {
                continue;
            }
            let statement: String = text.lines().skip(i).collect::<Vec<_>>().join(" ");
            let end = statement.find(';').unwrap();
            let expr = statement[..end].split_once('=').unwrap().1;
            let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
            found.push((name.to_owned(), rel.clone(), expr));
        }
    }
    found
}

/// The rows of the table under `## Limits` in docs/ARCHITECTURE.md, as their cells.
fn limits_table() -> Vec<Vec<String>> {
    let doc = fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("\n## Limits")
        .nth(1)
        .expect("a `## Limits` section");
    let section = section.split("\n## ").next().unwrap();
    let rows = section.lines().filter(|l| l.starts_with("| `"));
    let cells = |l: &str| {
        let inner = l.trim().trim_matches('|');
        inner
            .split(" | ")
            .map(|c| c.trim().trim_matches('`').to_owned())
            .collect()
    };
    rows.map(cells).collect()
}

/// Every limit constant has a row naming it, its file and its current value, and every
/// row names a constant that exists.
#[test]
fn every_limit_constant_is_in_the_limits_table() {
    let constants = limit_constants();
    assert!(
        constants.len() > 100,
        "the scan found {} constants",
        constants.len()
    );
    let table = limits_table();
    let mut problems = Vec::new();
    for (name, file, expr) in &constants {
        match table.iter().find(|r| r[0] == *name && r[1] == *file) {
            None => problems.push(format!("{name} ({file}) has no row")),
            Some(row) if row[2] != *expr => problems.push(format!(
                "{name} ({file}): table says {}, code {expr}",
                row[2]
            )),
            Some(_) => {}
        }
    }
    for row in &table {
        if !constants
            .iter()
            .any(|(n, f, _)| *n == row[0] && *f == row[1])
        {
            problems.push(format!("row {} ({}) names no constant", row[0], row[1]));
        }
    }
    assert!(
        problems.is_empty(),
        "limits table:\n  {}",
        problems.join("\n  ")
    );
}

/// The documentation files whose commands are checked.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![
        Path::new(ROOT).join("README.md"),
        Path::new(ROOT).join("perf/README.md"),
    ];
    for entry in fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Shell lines of fenced `sh`/`bash`/`shell` blocks (continuations joined) and inline
/// code spans that start with `shardline `.
fn documented_commands(doc: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_shell = None;
    let mut pending = String::new();
    for line in doc.lines() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            in_shell = match in_shell {
                None => Some(matches!(lang.trim(), "sh" | "bash" | "shell")),
                Some(_) => None,
            };
            continue;
        }
        match in_shell {
            Some(true) if line.trim_start().starts_with('#') => {}
            Some(true) => {
                let line = line.split(" #").next().unwrap();
                pending.push_str(line.trim_end().trim_end_matches('\\'));
                pending.push(' ');
                if !line.trim_end().ends_with('\\') {
                    commands.push(std::mem::take(&mut pending));
                }
            }
            Some(false) => {}
            None => {
                let spans = line.split('`').skip(1).step_by(2);
                let spans = spans.filter(|s| s.starts_with("shardline "));
                commands.extend(spans.map(str::to_owned));
            }
        }
    }
    commands
}

/// The argument words of each `shardline` invocation in a command line, up to the next
/// shell operator.
fn invocations(command: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut found = Vec::new();
    for (i, word) in words.iter().enumerate() {
        // `shardline` as a command word (not an argument, as in `pidof shardline`).
        let command_position = i == 0
            || matches!(
                words[i - 1],
                "|" | "&&" | "||" | ";" | "&" | "sudo" | "exec" | "time"
            );
        // `ROUTER_BIN=/tmp/x/shardline` assigns a path; it does not run it.
        let is_binary = (word.ends_with("/shardline") && !word.contains('='))
            || (*word == "shardline" && command_position);
        let via_cargo = *word == "--" && i >= 2 && words[..i].contains(&"run");
        if !is_binary && !via_cargo {
            continue;
        }
        let args = words[i + 1..]
            .iter()
            .take_while(|w| !matches!(**w, "|" | "&&" | ";" | "&" | ">" | "||" | "2>&1"))
            .map(|w| w.trim_matches(|c| matches!(c, '[' | ']' | '(' | ')' | '`')))
            .filter(|w| !w.is_empty() && *w != "|")
            .map(str::to_owned);
        found.push(args.collect());
    }
    found
}

struct Cli {
    help: BTreeMap<Vec<String>, String>,
}

impl Cli {
    fn help(&mut self, path: &[String]) -> &str {
        self.help.entry(path.to_vec()).or_insert_with(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_shardline"))
                .args(path)
                .arg("--help")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    }

    fn subcommands(&mut self, path: &[String]) -> BTreeSet<String> {
        let help = self.help(path);
        let Some(list) = help.split("Commands:\n").nth(1) else {
            return BTreeSet::new();
        };
        let list = list.split("\n\n").next().unwrap();
        let names = list.lines().filter_map(|l| l.split_whitespace().next());
        names.map(str::to_owned).collect()
    }

    /// What is wrong with one invocation, if anything.
    fn problem(&mut self, args: &[String]) -> Option<String> {
        let mut path: Vec<String> = Vec::new();
        let mut rest = args;
        loop {
            let commands = self.subcommands(&path);
            if commands.is_empty() {
                break;
            }
            match rest.first() {
                Some(word) if commands.contains(word) => {
                    path.push(word.clone());
                    rest = &rest[1..];
                }
                Some(word) if word.starts_with('-') => break,
                Some(word) => return Some(format!("no subcommand {word:?} under {path:?}")),
                None => break,
            }
        }
        let help = self.help(&path).to_owned();
        // Words after a bare `--` belong to another command (`gate --runs N -- BENCH_ARGS`).
        let own = rest.split(|w| w == "--").next().unwrap_or(&[]);
        for word in own.iter().filter(|w| w.starts_with("--") && w.len() > 2) {
            let flag = word.split('=').next().unwrap();
            let listed = help
                .split_whitespace()
                .any(|w| w.trim_end_matches(',') == flag);
            if !listed {
                return Some(format!("`shardline {}` has no {flag}", path.join(" ")));
            }
        }
        None
    }
}

/// Every `shardline …` command in the docs names real subcommands and flags (checked
/// against the built binary's `--help`), and every `scripts/*.sh` named exists and is
/// executable.
#[test]
fn documented_commands_and_scripts_exist() {
    let mut cli = Cli {
        help: BTreeMap::new(),
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut scripts = BTreeSet::new();
    for file in doc_files() {
        let doc = fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(ROOT).unwrap().display().to_string();
        for command in documented_commands(&doc) {
            for args in invocations(&command) {
                checked += 1;
                if let Some(problem) = cli.problem(&args) {
                    problems.push(format!("{name}: `{}`: {problem}", command.trim()));
                }
            }
        }
        for (i, _) in doc.match_indices("scripts/") {
            let tail = &doc[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || "/_.".contains(c)));
            let path = tail[..end.unwrap_or(tail.len())].trim_end_matches('.');
            if path.ends_with(".sh") {
                scripts.insert(path.to_owned());
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} shardline commands found in the docs"
    );
    let mut missing = Vec::new();
    for script in &scripts {
        let path = Path::new(ROOT).join(script);
        let executable = fs::metadata(&path).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        });
        if !executable && !SCRIPTS_LANDING_WITH_NATS.contains(&script.as_str()) {
            problems.push(format!(
                "{script}: documented but missing or not executable"
            ));
        }
        if !path.exists() {
            missing.push(script.as_str());
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "documented scripts not in this tree yet: {}",
            missing.join(", ")
        );
    }
    assert!(problems.is_empty(), "docs:\n  {}", problems.join("\n  "));
}

/// The checker itself finds a wrong flag and a wrong subcommand (a test that cannot fail
/// proves nothing).
#[test]
fn the_command_checker_catches_mistakes() {
    let mut cli = Cli {
        help: BTreeMap::new(),
    };
    let args = |line: &str| invocations(line).remove(0);
    assert_eq!(
        cli.problem(&args("shardline tune check --profile dev --strict")),
        None
    );
    let wrong_flag = cli.problem(&args("shardline tune plan --strict")).unwrap();
    assert!(wrong_flag.contains("no --strict"), "{wrong_flag}");
    let wrong_command = cli.problem(&args("shardline tune apply")).unwrap();
    assert!(
        wrong_command.contains("no subcommand \"apply\""),
        "{wrong_command}"
    );
    let via_cargo = args("cargo run --release -- serve --config x.toml | tee log");
    assert_eq!(via_cargo, ["serve", "--config", "x.toml"]);
    assert!(invocations("pidof shardline || journalctl -u shardline --no-pager").is_empty());
    assert!(invocations("ROUTER_BIN=/tmp/before/shardline perf/compare.sh").is_empty());
}

/// Paths the docs name on purpose as missing: the file whose absence an error message
/// reports.
const NAMED_AS_MISSING: [&str; 2] = [
    "config/policies/acme/gold.json", // TROUBLESHOOTING: policy_not_found
    "tuning/profiles/fast.toml",      // TROUBLESHOOTING: no such profile
];

/// Repository paths under `config/`, `scripts/`, `perf/` and `tuning/` a doc names:
/// `{a,b}` expanded; a `<placeholder>` or `*` part cut to the directory before it.
fn documented_paths(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    for root in ["config/", "scripts/", "perf/", "tuning/"] {
        for (i, _) in doc.match_indices(root) {
            let before = doc[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || "/_.-$".contains(c)) {
                continue; // part of a longer path (src/config/…) or a variable
            }
            let tail = &doc[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || "/_.-<>{},*".contains(c)))
                .unwrap_or(tail.len());
            let path = tail[..end].trim_end_matches([',', '.']);
            let path = match (path.find('{'), path.find('}')) {
                (Some(open), Some(close)) if open < close => {
                    let (stem, rest) = (&path[..open], &path[close + 1..]);
                    for member in path[open + 1..close].split(',') {
                        out.push(format!("{stem}{member}{rest}"));
                    }
                    continue;
                }
                _ => path,
            };
            let cut = path.find(['<', '*']).map_or(path, |at| &path[..at]);
            out.push(cut.trim_end_matches(['{', ',']).to_owned());
        }
    }
    out
}

/// Every repository path a doc names under `config/`, `scripts/`, `perf/` or `tuning/`
/// exists (a new operator following the docs finds each file).
#[test]
fn documented_paths_exist() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let doc = fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(ROOT).unwrap().display().to_string();
        for path in documented_paths(&doc) {
            checked += 1;
            if !Path::new(ROOT).join(&path).exists() && !NAMED_AS_MISSING.contains(&path.as_str()) {
                problems.push(format!("{name}: {path} does not exist"));
            }
        }
    }
    assert!(checked > 30, "only {checked} paths found in the docs");
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "docs:\n  {}", problems.join("\n  "));
    let caught = documented_paths("see `config/certs/server.{crt,key}` and tuning/nope/*.toml");
    assert_eq!(
        caught,
        [
            "config/certs/server.crt",
            "config/certs/server.key",
            "tuning/nope/"
        ]
    );
}

/// Every flag the docs show for `scripts/validate_nats_tls.sh` is in its `--help`, which
/// lists the certificate and server flags (checking production certificates).
#[test]
fn validate_nats_tls_help_lists_the_documented_flags() {
    let out = Command::new(Path::new(ROOT).join("scripts/validate_nats_tls.sh"))
        .arg("--help")
        .output()
        .expect("run scripts/validate_nats_tls.sh --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags: BTreeSet<String> = ["--ca", "--cert", "--key", "--server", "--nats-only"]
        .map(str::to_owned)
        .into();
    for file in doc_files() {
        let doc = fs::read_to_string(&file).unwrap().replace("\\\n", " ");
        for line in doc.lines() {
            let Some(at) = line.find("scripts/validate_nats_tls.sh") else {
                continue;
            };
            let rest = line[at..].split('`').next().unwrap();
            let rest = rest.split(" #").next().unwrap();
            flags.extend(
                rest.split(|c: char| c.is_whitespace() || "[]|".contains(c))
                    .filter(|w| w.starts_with("--"))
                    .map(str::to_owned),
            );
        }
    }
    let missing: Vec<_> = flags
        .iter()
        .filter(|f| !help.contains(f.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in --help: {missing:?}\n{help}");
}

/// The token length bound the docs state is the code's (`TOKEN_BYTES_MIN`..`MAX`), and the
/// message TROUBLESHOOTING quotes is the one `config check` and `serve` print.
#[test]
fn token_length_bounds_agree_with_the_code() {
    use shardline::admin::{token_length_problem, TOKEN_BYTES_MAX, TOKEN_BYTES_MIN};
    let bound = format!("{TOKEN_BYTES_MIN}–{TOKEN_BYTES_MAX} visible ASCII characters");
    for doc in ["docs/OPERATIONS.md", "docs/TROUBLESHOOTING.md"] {
        let text = fs::read_to_string(Path::new(ROOT).join(doc)).unwrap();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains(&bound), "{doc} states {bound}");
        for (i, _) in text.match_indices(" visible ASCII characters") {
            let before = &text[..i];
            let start = before.rfind(' ').map_or(0, |s| s + 1);
            if before[start..].contains('–') {
                let stated = &text[start..i];
                assert_eq!(
                    stated,
                    format!("{TOKEN_BYTES_MIN}–{TOKEN_BYTES_MAX}"),
                    "{doc}"
                );
            }
        }
    }
    let troubleshooting =
        fs::read_to_string(Path::new(ROOT).join("docs/TROUBLESHOOTING.md")).unwrap();
    let message = format!(
        "admin.tokens[0].token: {}",
        token_length_problem(5).unwrap()
    );
    assert!(
        troubleshooting.contains(&message),
        "TROUBLESHOOTING quotes {message}"
    );
}

/// `curl -d @FILE` strips newlines from the file; every documented upload of a file uses
/// `--data-binary`, so a stored policy is byte for byte the file.
#[test]
fn documented_curl_uploads_keep_the_file_bytes() {
    let mut problems = Vec::new();
    for file in doc_files() {
        let doc = fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(ROOT).unwrap().display().to_string();
        for command in documented_commands(&doc) {
            if command.contains("curl ") && command.contains(" -d @") {
                problems.push(format!("{name}: `{}`", command.trim()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "use --data-binary @FILE:\n  {}",
        problems.join("\n  ")
    );
}

/// Every test docs/RELIABILITY.md names (`file::name`, a test file's or a module path's
/// last segment and a function) exists: a fault's row must point at a test that runs.
#[test]
fn reliability_table_names_real_tests() {
    let doc = fs::read_to_string(Path::new(ROOT).join("docs/RELIABILITY.md")).unwrap();
    let mut sources = Vec::new();
    for dir in [
        "src",
        "core/src",
        "tests",
        "shards/src",
        "tools/src",
        "fuzz/src",
    ] {
        rust_files(&Path::new(ROOT).join(dir), &mut sources);
    }
    let texts: Vec<(PathBuf, String)> = sources
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    let mut named = 0;
    let mut missing = Vec::new();
    for cell in doc.split('`').skip(1).step_by(2) {
        let Some((path, name)) = cell.rsplit_once("::") else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        named += 1;
        let file = path.rsplit("::").next().unwrap();
        let found = texts.iter().any(|(p, text)| {
            let in_file = p.to_string_lossy().contains(file);
            in_file && text.contains(&format!("fn {name}("))
        });
        if !found {
            missing.push(cell.to_owned());
        }
    }
    assert!(
        named >= 30,
        "only {named} tests named: is the table still there?"
    );
    assert!(
        missing.is_empty(),
        "named in RELIABILITY.md, not found: {missing:?}"
    );
}
