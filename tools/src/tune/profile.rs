//! A tuning profile as written in `tuning/profiles/*.toml`: what a node should look like.
//!
//! Every setting carries its reason (`why`) and the loader refuses one without: a profile
//! is read by the operator who applies it, and an unexplained `busy_poll = 50` is cargo
//! cult. Unknown keys are refused for the same reason as in the router's config: a
//! misspelt sysctl name must not silently check nothing.
//!
//! Cores are not named by number but by rules (see `cores`), so one profile serves a 2-core
//! laptop and a 64-core node; cpu lists appear only after the rules meet a machine.
//!
//! `[router]` holds the router's own settings that only make sense with the node's tuning:
//! `server.poll = "busy"` is right on the isolated cores of `low-latency` and wrong on any
//! core shared with something else, so the profile that isolates the cores says so.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shards::PollMode;

use super::cores::CoreRules;
use super::TuneError;

/// Largest profile file read (the bundled ones are about 6 KiB).
pub const PROFILE_BYTES_MAX: u64 = 256 << 10;
/// Sysctls in one profile.
pub const SYSCTLS_MAX: usize = 256;
/// Kernel boot parameters in one profile.
pub const BOOT_PARAMS_MAX: usize = 32;
/// Bytes of one value or reason: a line a person reads, not a document.
pub const VALUE_BYTES_MAX: usize = 512;

/// Where the bundled profiles live in the repository (compiled into the binary as
/// `BUILT_IN`; `--profiles-dir` looks names up in another directory instead).
pub const PROFILES_DIR_DEFAULT: &str = "tuning/profiles";

/// The bundled profiles, compiled in: `--profile NAME` without `--profiles-dir` works
/// from any directory, as an installed binary has no repository beside it.
pub const BUILT_IN: [(&str, &str); 3] = [
    ("dev", include_str!("../../../tuning/profiles/dev.toml")),
    (
        "low-latency",
        include_str!("../../../tuning/profiles/low-latency.toml"),
    ),
    (
        "throughput",
        include_str!("../../../tuning/profiles/throughput.toml"),
    ),
];

/// One profile, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Set by the loader from the file stem.
    #[serde(skip)]
    pub name: String,
    /// One line: what the profile is for.
    pub description: String,
    /// Keyed by the sysctl's dotted name (`net.core.somaxconn`).
    #[serde(default)]
    pub sysctl: BTreeMap<String, Setting>,
    #[serde(default)]
    pub cpu: CpuSettings,
    /// Keyed by parameter name (`isolcpus`); values may hold `{shards}`, `{irq}`,
    /// `{nats}` and `{housekeeping}`, replaced by the core plan's cpu lists.
    #[serde(default)]
    pub boot: BTreeMap<String, Setting>,
    pub cores: CoreRules,
    #[serde(default)]
    pub router: RouterSettings,
}

/// The router config's settings a profile expects (`tune check` reads them through
/// `RouterConfig`, the router's own parser).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    /// `server.poll`: one of `POLL_MODES`.
    pub poll: Option<Setting>,
}

/// `server.poll`'s values, spelt as the router's config spells them.
pub const POLL_MODES: [&str; 3] = ["park", "adaptive", "busy"];

/// `mode` as `server.poll` spells it; the spin of `adaptive` is `server.poll_spin_us`,
/// which no profile pins (the default suits every one of them).
pub fn poll_name(mode: &PollMode) -> &'static str {
    match mode {
        PollMode::Park => POLL_MODES[0],
        PollMode::Adaptive(_) => POLL_MODES[1],
        PollMode::Busy => POLL_MODES[2],
    }
}

/// CPU settings outside `/proc/sys`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuSettings {
    /// cpufreq scaling governor on every core of the machine.
    pub governor: Option<Setting>,
    /// Deepest idle state allowed on shard cores, as its exit latency in microseconds.
    pub idle_latency_us_max: Option<Setting>,
    /// `/sys/kernel/mm/transparent_hugepage/enabled`: `always`, `madvise` or `never`.
    pub transparent_hugepages: Option<Setting>,
}

/// One expected value and why. Exactly one of `value` (equal) and `min` (at least).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    pub value: Option<Scalar>,
    pub min: Option<i64>,
    pub why: String,
}

/// A value as TOML writes it: `4096` or `"1024 65535"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Text(String),
}

/// What a setting expects, once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Equal after whitespace runs are folded to one space (`/proc/sys` uses tabs).
    Equal(String),
    /// An integer at least this large.
    AtLeast(i64),
}

impl Setting {
    /// The expectation; the loader has checked that exactly one form is given.
    pub fn expect(&self) -> Expect {
        match (&self.value, self.min) {
            (Some(Scalar::Int(n)), _) => Expect::Equal(n.to_string()),
            (Some(Scalar::Text(t)), _) => Expect::Equal(fold_whitespace(t)),
            (None, Some(min)) => Expect::AtLeast(min),
            (None, None) => unreachable!("validated at load: a setting has value or min"),
        }
    }
}

impl Expect {
    /// Whether `actual` (as read from the machine) meets the expectation.
    pub fn met_by(&self, actual: &str) -> bool {
        match self {
            Expect::Equal(want) => *want == fold_whitespace(actual),
            Expect::AtLeast(min) => actual.trim().parse::<i64>().is_ok_and(|n| n >= *min),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Equal(v) => f.write_str(v),
            Expect::AtLeast(min) => write!(f, ">= {min}"),
        }
    }
}

/// Folds every run of whitespace to one space and trims the ends.
pub fn fold_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_path(profile: &str) -> bool {
    profile.contains('/') || profile.ends_with(".toml") || Path::new(profile).is_file()
}

/// Resolves `--profile` to a file: a path when it names a file or contains `/` or ends
/// in `.toml`, else `<profiles_dir>/<name>.toml`; `None` for a built-in profile's name
/// (no path and no `--profiles-dir`).
pub fn resolve(profile: &str, profiles_dir: Option<&Path>) -> Option<PathBuf> {
    if is_path(profile) {
        return Some(PathBuf::from(profile));
    }
    profiles_dir.map(|dir| dir.join(format!("{profile}.toml")))
}

/// Reads and validates the profile `--profile` names: a file, or a name looked up in
/// `profiles_dir`, or else among the built-in profiles.
pub fn load(profile: &str, profiles_dir: Option<&Path>) -> Result<Profile, TuneError> {
    let Some(path) = resolve(profile, profiles_dir) else {
        let shown = PathBuf::from(format!("{PROFILES_DIR_DEFAULT}/{profile}.toml (built in)"));
        let Some((_, text)) = BUILT_IN.iter().find(|(name, _)| *name == profile) else {
            let names: Vec<&str> = BUILT_IN.iter().map(|(name, _)| *name).collect();
            return Err(TuneError::ProfileNotFound {
                path: shown,
                available: names.join(", "),
            });
        };
        return parse(text, profile, &shown);
    };
    let file = std::fs::File::open(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TuneError::ProfileNotFound {
            path: path.clone(),
            available: available(path.parent().unwrap_or(Path::new("."))),
        },
        _ => TuneError::Read {
            path: path.clone(),
            source,
        },
    })?;
    let mut text = String::new();
    file.take(PROFILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|source| TuneError::Read {
            path: path.clone(),
            source,
        })?;
    if text.len() as u64 > PROFILE_BYTES_MAX {
        return Err(invalid(
            &path,
            format!("larger than {PROFILE_BYTES_MAX} bytes"),
        ));
    }
    let name = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    parse(&text, &name, &path)
}

/// Parses and validates a profile's text; `path` names it in messages.
fn parse(text: &str, name: &str, path: &Path) -> Result<Profile, TuneError> {
    let mut parsed: Profile =
        toml::from_str(text).map_err(|e| invalid(path, e.message().to_owned()))?;
    parsed.name = name.to_owned();
    validate(&parsed).map_err(|reason| invalid(path, reason))?;
    Ok(parsed)
}

fn invalid(path: &Path, reason: String) -> TuneError {
    TuneError::InvalidProfile {
        path: path.to_path_buf(),
        reason,
    }
}

/// The profile names in a directory, sorted, for the "not found" message.
fn available(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return "none".into();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn validate(profile: &Profile) -> Result<(), String> {
    if profile.sysctl.len() > SYSCTLS_MAX {
        return Err(format!("more than {SYSCTLS_MAX} sysctls"));
    }
    if profile.boot.len() > BOOT_PARAMS_MAX {
        return Err(format!("more than {BOOT_PARAMS_MAX} boot parameters"));
    }
    for (key, setting) in &profile.sysctl {
        let well_formed = !key.is_empty()
            && key.split('.').all(|p| {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !well_formed {
            return Err(format!("sysctl.{key:?}: not a dotted sysctl name"));
        }
        check_setting(&format!("sysctl.{key}"), setting)?;
    }
    for (key, setting) in &profile.boot {
        if setting.min.is_some() {
            return Err(format!(
                "boot.{key}: a boot parameter takes `value`, not `min`"
            ));
        }
        check_setting(&format!("boot.{key}"), setting)?;
    }
    let cpu = &profile.cpu;
    let named = [
        ("cpu.governor", &cpu.governor),
        ("cpu.idle_latency_us_max", &cpu.idle_latency_us_max),
        ("cpu.transparent_hugepages", &cpu.transparent_hugepages),
    ];
    for (key, setting) in named {
        if let Some(setting) = setting {
            if setting.min.is_some() {
                return Err(format!("{key}: takes `value`, not `min`"));
            }
            check_setting(key, setting)?;
        }
    }
    if let Some(Setting {
        value: Some(Scalar::Text(_)),
        ..
    }) = &cpu.idle_latency_us_max
    {
        return Err("cpu.idle_latency_us_max: must be an integer (microseconds)".into());
    }
    if let Some(poll) = &profile.router.poll {
        validate_poll(poll)?;
    }
    profile.cores.validate()
}

/// A typo (`"buzy"`) would otherwise be a row that can never be OK, with a fix hint that
/// writes a config the router refuses.
fn validate_poll(poll: &Setting) -> Result<(), String> {
    let key = "router.poll";
    if poll.min.is_some() {
        return Err(format!("{key}: takes `value`, not `min`"));
    }
    check_setting(key, poll)?;
    let known = match &poll.value {
        Some(Scalar::Text(name)) => POLL_MODES.contains(&name.as_str()),
        _ => false,
    };
    if !known {
        let names = POLL_MODES.map(|n| format!("{n:?}")).join(", ");
        return Err(format!(
            "{key}: must be one of {names} (server.poll's values)"
        ));
    }
    Ok(())
}

fn check_setting(key: &str, setting: &Setting) -> Result<(), String> {
    if setting.value.is_some() == setting.min.is_some() {
        return Err(format!("{key}: give exactly one of `value` and `min`"));
    }
    if setting.why.trim().is_empty() {
        return Err(format!("{key}: `why` is empty: say what the setting buys"));
    }
    let value_len = match &setting.value {
        Some(Scalar::Text(t)) => t.len(),
        _ => 0,
    };
    if value_len > VALUE_BYTES_MAX || setting.why.len() > VALUE_BYTES_MAX {
        return Err(format!(
            "{key}: value or why longer than {VALUE_BYTES_MAX} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_fold_whitespace_and_compare_integers() {
        assert!(Expect::Equal("1024 65535".into()).met_by("1024\t65535\n"));
        assert!(!Expect::Equal("1".into()).met_by("0\n"));
        assert!(Expect::AtLeast(4096).met_by("65535\n"));
        assert!(!Expect::AtLeast(4096).met_by("128"));
        assert!(!Expect::AtLeast(1).met_by("not a number"));
    }

    #[test]
    fn names_resolve_under_the_profiles_dir_and_paths_stay_paths() {
        let dir = Path::new("elsewhere");
        let by_name = resolve("dev", Some(dir));
        assert_eq!(by_name.as_deref(), Some(Path::new("elsewhere/dev.toml")));
        let by_path = resolve("x/y.toml", Some(dir));
        assert_eq!(by_path.as_deref(), Some(Path::new("x/y.toml")));
        assert_eq!(resolve("dev", None), None);
        assert_eq!(load("dev", None).unwrap().name, "dev");
    }

    /// The smallest valid profile, with `extra` appended.
    fn parse_with(extra: &str) -> Result<Profile, TuneError> {
        let text = format!(
            "description = \"t\"\n\
             [cores]\nshards = \"all\"\nirq = \"all\"\nnats = \"all\"\n\
             housekeeping = \"all\"\nexclusive = false\nwhy = \"t\"\n{extra}"
        );
        parse(&text, "t", Path::new("t.toml"))
    }

    #[test]
    fn router_section_is_optional_and_read_when_given() {
        assert!(parse_with("").unwrap().router.poll.is_none());
        let busy = "[router]\npoll = { value = \"busy\", why = \"isolated cores\" }\n";
        let poll = parse_with(busy).unwrap().router.poll.unwrap();
        assert_eq!(poll.expect(), Expect::Equal("busy".into()));
        assert_eq!(poll.why, "isolated cores");
    }

    /// A misspelt mode is refused at load, naming the key and the values it takes, rather
    /// than checked as a row that can never be OK.
    #[test]
    fn unknown_poll_values_and_forms_are_refused() {
        let refused = |router: &str| {
            let err = parse_with(&format!("[router]\n{router}\n")).unwrap_err();
            err.to_string()
        };
        let err = refused("poll = { value = \"buzy\", why = \"w\" }");
        assert!(err.contains("router.poll: must be one of"), "{err}");
        assert!(err.contains("\"park\", \"adaptive\", \"busy\""), "{err}");
        assert!(refused("poll = { value = 1, why = \"w\" }").contains("must be one of"));
        assert!(refused("poll = { min = 1, why = \"w\" }").contains("not `min`"));
        assert!(refused("poll = { value = \"busy\", why = \" \" }").contains("`why` is empty"));
        assert!(refused("spin = { value = 50, why = \"w\" }").contains("unknown field"));
    }

    #[test]
    fn bundled_profiles_never_busy_poll_shared_cores() {
        let poll = |name: &str| {
            let profile = load(name, None).unwrap();
            profile.router.poll.unwrap().expect().to_string()
        };
        assert_eq!(poll("low-latency"), "busy");
        assert_eq!(poll("throughput"), "adaptive");
        assert_ne!(poll("dev"), "busy");
    }

    #[test]
    fn poll_names_are_the_modes() {
        let modes = [
            PollMode::Park,
            PollMode::Adaptive(std::time::Duration::from_micros(50)),
            PollMode::Busy,
        ];
        assert_eq!(modes.map(|m| poll_name(&m)), POLL_MODES);
    }
}
