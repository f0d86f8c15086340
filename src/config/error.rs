//! Why a configuration was refused. Every problem names where it is (a key path such as
//! `limits.ring_slots`, or an environment variable) so an operator can fix all of them in
//! one pass instead of one restart per mistake.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path (`limits.ring_slots`, `admin.tokens[2].tenant`) or variable name.
    pub key: String,
    /// What is wrong, in words that say how to fix it. Never quotes a secret.
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The problems of one configuration, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{}", if n == 1 { "" } else { "s" })?;
        for problem in &self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// Why `Config::load` (or a step of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be opened or read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is larger than `CONFIG_FILE_BYTES_MAX`.
    #[error("config file {} is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    /// The text is not TOML. The line itself is not quoted: it may hold a secret.
    #[error("config is not valid TOML: line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// The TOML or the environment names unknown keys, has values of the wrong type, or
    /// breaks a rule; every problem found is listed.
    #[error("invalid config: {0}")]
    Invalid(Problems),
}

impl ConfigError {
    /// The individual problems (empty for read and syntax errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => &problems.0,
            _ => &[],
        }
    }

    /// `Ok` if there is nothing to report, else the problems.
    pub(super) fn check(problems: Vec<Problem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(Problems(problems)))
        }
    }
}
