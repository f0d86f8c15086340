//! The policy store under faults, through `shardline serve` as its own process: a full
//! disk under the policies directory, SIGKILL in the middle of admin writes, and (with
//! `--features fault-injection`) a failed directory fsync after a rename. In every case
//! the document on disk is the old or the new one, whole, and what the router serves
//! agrees with it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::process::RouterProcess;
use support::*;

const TOKEN: &str = "store-faults-token-0123456789";
/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(30);
/// Rounds of the SIGKILL test.
const KILL_ROUNDS: usize = 4;

const OPENAI: &str = r#"{"version":"1.0","providers":[{"name":"openai","weight":100}]}"#;
const ANTHROPIC: &str = r#"{"version":"2.0","providers":[{"name":"anthropic","weight":100}]}"#;

/// Starts `shardline serve` on `dir` with the admin token and `env`, and waits until it
/// answers `/readyz`.
fn spawn(dir: &TempDir, env: &[(&str, &str)]) -> RouterProcess {
    let token = [("SHARDLINE_ADMIN_TOKEN", TOKEN)];
    let env = token.iter().chain(env).copied();
    let router = RouterProcess::spawn_env(&dir.0.join("shardline.toml"), env);
    let deadline = Instant::now() + WAIT;
    while call(router.addr, "GET", "/readyz", b"").map(|r| r.status) != Some(200) {
        assert!(Instant::now() < deadline, "the router never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    router
}

fn call(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<Response> {
    let mut client = Client::connect(addr);
    let auth = format!("Bearer {TOKEN}");
    client.send(method, path, &[("Authorization", &auth)], body);
    client.read_response()
}

fn policy_url(id: &str) -> String {
    format!("/admin/v1/policies/acme/{id}")
}

/// The provider the router decides for acme's policy `id`.
fn decided_provider(addr: SocketAddr, id: &str) -> String {
    let body = format!(
        r#"{{"request_id":"r","tenant_id":"acme","policy_id":"{id}","task":{{"type":"chat","payload_ref":"p"}}}}"#
    );
    let resp = call(addr, "POST", "/v1/decide", body.as_bytes()).expect("a decide answer");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp.json()["decision"]["provider_id"]
        .as_str()
        .expect("provider_id")
        .to_owned()
}

/// Dot-files (temp and backup files) in a directory, except `keep`.
fn dot_files(dir: &Path, keep: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.') && n != keep)
        .collect()
}

fn acme_dir(dir: &TempDir) -> PathBuf {
    dir.0.join("policies/acme")
}

/// A 5xx answer in the contract's error format whose message contains `needle`.
fn assert_store_error(resp: &Response, needle: &str) {
    let text = String::from_utf8_lossy(&resp.body);
    assert!(resp.status >= 500, "status {}: {text}", resp.status);
    let json = resp.json();
    assert_eq!(json["ok"], false, "{text}");
    assert_eq!(json["error"]["code"], "internal", "{text}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{text}");
}

/// A tmpfs mounted on a directory, unmounted when dropped (lazily if still busy).
struct Mount(PathBuf);

impl Mount {
    /// `Err(reason)` when this process may not mount (not root, no CAP_SYS_ADMIN).
    fn tmpfs(path: &Path, size: &str) -> Result<Mount, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount(path.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.0).status();
        if !status.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the filesystem of `dir` with a dot-file (which the loader ignores) until a write
/// fails for lack of space.
fn fill(dir: &Path, name: &str) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join(name)).expect("create the filler");
    let chunk = vec![0u8; 16 * 1024];
    for _ in 0..1024 {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return;
        }
    }
    panic!("a 1 MiB tmpfs never filled up");
}

/// A full disk under the policies directory: an admin PUT answers a 5xx error in the
/// contract format that says the disk is full, the old document is still on disk whole
/// and still served, no temp file is left; once space is freed the same PUT succeeds.
#[test]
fn full_disk_answers_a_clear_error_and_keeps_the_old_document() {
    let _serial = serial();
    let dir = config_dir("store-full", "");
    let policies = dir.0.join("policies");
    let _mount = match Mount::tmpfs(&policies, "1m") {
        Ok(mount) => mount,
        Err(reason) => {
            println!("skipped: a full disk needs a tmpfs mount: {reason}");
            return;
        }
    };
    std::fs::create_dir(policies.join("acme")).unwrap();
    std::fs::write(acme_dir(&dir).join("default.json"), OPENAI).unwrap();
    let router = spawn(&dir, &[]);
    assert_eq!(decided_provider(router.addr, "default"), "openai");

    fill(&policies, ".filler");
    let resp = call(
        router.addr,
        "PUT",
        &policy_url("default"),
        ANTHROPIC.as_bytes(),
    )
    .expect("an answer to the PUT");
    assert_store_error(&resp, "disk is full");
    let on_disk = std::fs::read_to_string(acme_dir(&dir).join("default.json")).unwrap();
    assert_eq!(on_disk, OPENAI);
    assert_eq!(dot_files(&acme_dir(&dir), ""), Vec::<String>::new());
    assert_eq!(decided_provider(router.addr, "default"), "openai");

    std::fs::remove_file(policies.join(".filler")).unwrap();
    let resp = call(
        router.addr,
        "PUT",
        &policy_url("default"),
        ANTHROPIC.as_bytes(),
    )
    .expect("an answer to the PUT");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(decided_provider(router.addr, "default"), "anthropic");
    drop(router);
}

/// A time-derived number for the kill moment; no two rounds alike.
fn jitter(round: usize) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos ^ (round as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 400
}

/// SIGKILL at a random moment during a loop of admin PUTs alternating two documents of
/// one policy: after each kill the file is exactly one of the two, the router restarts
/// on the directory (stray temp or backup files do not stop it) and serves that document.
#[test]
fn sigkill_during_admin_puts_never_tears_a_document() {
    let _serial = serial();
    let dir = config_dir("store-kill", "");
    // A large second document widens the window in which a torn write could be seen.
    let padded = format!("{}{}", ANTHROPIC, " ".repeat(256 * 1024));
    let docs = [OPENAI.to_owned(), padded];
    std::fs::write(acme_dir(&dir).join("flip.json"), &docs[0]).unwrap();
    for round in 0..KILL_ROUNDS {
        let router = spawn(&dir, &[]);
        let addr = router.addr;
        let docs_for_writer = docs.clone();
        let writer = std::thread::spawn(move || {
            let mut puts = 0usize;
            while let Some(resp) = call(
                addr,
                "PUT",
                &policy_url("flip"),
                docs_for_writer[puts % 2].as_bytes(),
            ) {
                // 429: a rate limit on admin writes; the loop just goes on.
                let ok = resp.status == 200 || resp.status == 429;
                assert!(
                    ok,
                    "{}: {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                );
                puts += usize::from(resp.status == 200);
            }
            puts
        });
        std::thread::sleep(Duration::from_millis(50 + jitter(round)));
        support::process::signal(router.id(), libc::SIGKILL);
        drop(router);
        let puts = writer.join().expect("the writer thread");
        let on_disk = std::fs::read_to_string(acme_dir(&dir).join("flip.json")).unwrap();
        let which = docs
            .iter()
            .position(|d| *d == on_disk)
            .unwrap_or_else(|| panic!("round {round}: a torn document ({} bytes)", on_disk.len()));
        println!("round {round}: killed after {puts} PUT(s), document {which} on disk");
        let restarted = spawn(&dir, &[]);
        let expected = ["openai", "anthropic"][which];
        assert_eq!(decided_provider(restarted.addr, "flip"), expected);
    }
}

/// With the directory fsync after a rename failing (injected): a PUT over an existing
/// document, a PUT of a new one and a DELETE all answer a 5xx error, the store is rolled
/// back (the old document, byte for byte, or no document), no dot-file is left, and the
/// served table still decides with the old document, before and after a restart.
#[cfg(feature = "fault-injection")]
#[test]
fn failed_directory_fsync_rolls_back_the_write() {
    let _serial = serial();
    let dir = config_dir("store-fsync", "");
    let acme = acme_dir(&dir);
    std::fs::write(acme.join("fragile.json"), OPENAI).unwrap();
    let env = [("FAULT_INJECTION_DIR_FSYNC_POLICY", "fragile")];
    let router = spawn(&dir, &env);
    let addr = router.addr;
    assert_eq!(decided_provider(addr, "fragile"), "openai");

    let resp = call(addr, "PUT", &policy_url("fragile"), ANTHROPIC.as_bytes()).unwrap();
    assert_store_error(&resp, "nothing was changed");
    assert_eq!(
        std::fs::read_to_string(acme.join("fragile.json")).unwrap(),
        OPENAI
    );
    let got = call(addr, "GET", &policy_url("fragile"), b"").unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(decided_provider(addr, "fragile"), "openai");

    let resp = call(
        addr,
        "PUT",
        &policy_url("fragile-new"),
        ANTHROPIC.as_bytes(),
    )
    .unwrap();
    assert_store_error(&resp, "nothing was changed");
    assert!(!acme.join("fragile-new.json").exists());
    let got = call(addr, "GET", &policy_url("fragile-new"), b"").unwrap();
    assert_eq!(got.status, 404);

    let resp = call(addr, "DELETE", &policy_url("fragile"), b"").unwrap();
    assert_store_error(&resp, "nothing was changed");
    assert_eq!(
        std::fs::read_to_string(acme.join("fragile.json")).unwrap(),
        OPENAI
    );
    assert_eq!(dot_files(&acme, ""), Vec::<String>::new());

    // Other policies are written as usual.
    let resp = call(addr, "PUT", &policy_url("sturdy"), ANTHROPIC.as_bytes()).unwrap();
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    drop(router);
    let restarted = spawn(&dir, &[]);
    assert_eq!(decided_provider(restarted.addr, "fragile"), "openai");
    assert_eq!(decided_provider(restarted.addr, "sturdy"), "anthropic");
}
