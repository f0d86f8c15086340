//! Bearer tokens (SPEC §8, §12): which token was presented, and what it may touch.
//!
//! A token has two dimensions. Its `Scope` is its reach over tenants: every tenant, or one
//! tenant. Its `Permissions` (the config calls them `scopes`: `admin`, `results`,
//! `decide`) say which doors it opens: the admin API, `POST /v1/results`, `/v1/decide`.
//! Why both: a worker that reports results for `acme` must not be able to rewrite acme's
//! policies, and an admin token for `acme` must not be able to steer globex's circuits.
//! Tokens configured without permissions get `admin` only, which is what they meant before
//! permissions existed; the environment token holds every permission.
//!
//! `Tokens::grant` reads `Authorization: Bearer <token>` and compares the token with
//! *every* configured token in constant time, so neither which token matched nor how much
//! of a prefix matched shows in the timing.
//!
//! Why padded buffers and not digests: each configured token sits in a zeroed
//! `TOKEN_BYTES_MAX`-byte buffer next to its length; the presented token is copied into a
//! buffer of the same size, and both the whole buffers and the lengths are compared with
//! `subtle`, for every token, without an early exit. The work is the same whatever the
//! tokens' lengths, and no hash crate is needed. A presented token longer than
//! `TOKEN_BYTES_MAX` is refused before any comparison, which tells an attacker only a
//! public constant. The matching entry is selected with `conditional_assign`, so the loop
//! has no data-dependent branch.
//!
//! No token configured means no access at all: every request is `unauthorized`.
//!
//! The length bounds (`TOKEN_BYTES_MIN..=TOKEN_BYTES_MAX`) and the message for a token
//! outside them (`token_length_problem`) are the only ones: `config check` and `serve`
//! both use them, so a token one accepts the other accepts too.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::contract::ErrorCode;
use crate::policy::is_tenant_id;

/// A configured or presented token, in bytes.
pub const TOKEN_BYTES_MAX: usize = 256;
/// A configured token, in bytes: anything shorter is too easy to guess.
pub const TOKEN_BYTES_MIN: usize = 16;
/// Configured tokens; the check compares against each one.
pub const TOKENS_MAX: usize = 1024;

const _: () = assert!(TOKEN_BYTES_MIN <= TOKEN_BYTES_MAX);
const _: () = assert!(TOKENS_MAX <= u32::MAX as usize);

/// One door a token may open (the config's `scopes` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// The admin API (`/admin/v1/…`, NATS admin subjects).
    Admin,
    /// `POST /v1/results`: results steer circuits and averages.
    Results,
    /// `POST /v1/decide`, when `[auth] decide = "token"`.
    Decide,
}

impl Permission {
    pub const ALL: [Permission; 3] = [Permission::Admin, Permission::Results, Permission::Decide];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Admin => "admin",
            Permission::Results => "results",
            Permission::Decide => "decide",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of `Permission`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions(u8);

impl Permissions {
    /// What a token configured without `scopes` holds.
    pub const ADMIN: Permissions = Permissions(1);
    /// What the environment token holds.
    pub const ALL: Permissions = Permissions(0b111);

    pub fn of(list: &[Permission]) -> Permissions {
        Permissions(list.iter().fold(0, |bits, p| bits | p.bit()))
    }

    pub fn has(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }
}

/// What a token may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant, and the operations that touch them all (reload).
    All,
    /// One tenant's policies, circuits and dry-runs only.
    Tenant(Box<str>),
}

impl Scope {
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant(own) => **own == *tenant,
        }
    }

    /// `Forbidden` unless the scope covers `tenant`.
    pub fn require(&self, tenant: &str) -> Result<(), AuthError> {
        if self.allows(tenant) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                tenant: shown(tenant).into(),
            })
        }
    }

    /// `NeedsAllTenants` unless the scope covers every tenant.
    pub fn require_all(&self) -> Result<(), AuthError> {
        match self {
            Scope::All => Ok(()),
            Scope::Tenant(_) => Err(AuthError::NeedsAllTenants),
        }
    }
}

/// Why a request was refused. Messages never echo the presented token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("admin requests need an Authorization: Bearer <token> header (over NATS: an authorization header or a token member)")]
    Missing,
    /// No `Authorization` header on a results or decide request that needs one.
    #[error("{} needs an Authorization: Bearer <token> header with a token holding the {} scope", route_of(*.0), .0.as_str())]
    MissingFor(Permission),
    /// The header is not `Bearer <token>`.
    #[error("the Authorization header must be Bearer <token>")]
    NotBearer,
    /// No configured token matches.
    #[error("the bearer token is not valid")]
    InvalidToken,
    /// A valid tenant-scoped token, for another tenant.
    #[error("this token may not act on tenant {tenant}")]
    Forbidden { tenant: Box<str> },
    /// A valid tenant-scoped token, for an operation on every tenant.
    #[error("this operation needs a token scoped to all tenants")]
    NeedsAllTenants,
    /// A valid token without the permission the route needs.
    #[error("this token does not hold the {} scope", .0.as_str())]
    Lacks(Permission),
}

fn route_of(p: Permission) -> &'static str {
    match p {
        Permission::Admin => "the admin API",
        Permission::Results => "POST /v1/results",
        Permission::Decide => "POST /v1/decide",
    }
}

/// `AuthError::reason` values, in the order of `AuthError::reason_index`.
pub const AUTH_FAILURE_REASONS: [&str; 5] = [
    "missing",
    "malformed",
    "invalid_token",
    "wrong_tenant",
    "missing_scope",
];

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing
            | AuthError::MissingFor(_)
            | AuthError::NotBearer
            | AuthError::InvalidToken => ErrorCode::Unauthorized,
            AuthError::Forbidden { .. } | AuthError::NeedsAllTenants | AuthError::Lacks(_) => {
                ErrorCode::Forbidden
            }
        }
    }

    /// The `reason` label of `shardline_auth_failures_total`: an index into
    /// `AUTH_FAILURE_REASONS`.
    pub fn reason_index(&self) -> usize {
        match self {
            AuthError::Missing | AuthError::MissingFor(_) => 0,
            AuthError::NotBearer => 1,
            AuthError::InvalidToken => 2,
            AuthError::Forbidden { .. } | AuthError::NeedsAllTenants => 3,
            AuthError::Lacks(_) => 4,
        }
    }

    pub fn reason(&self) -> &'static str {
        AUTH_FAILURE_REASONS[self.reason_index()]
    }
}

/// A token that passed `Tokens::grant`: its position in the configured list (the key of
/// per-token limits) and its tenant reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub index: usize,
    pub scope: Scope,
}

/// One configured token: `tenant` `None` = all tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub token: String,
    pub tenant: Option<String>,
    pub permissions: Permissions,
}

/// A configuration mistake in the token list; `index` is the token's position in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    #[error("{count} admin tokens; at most {TOKENS_MAX}")]
    TooMany { count: usize },
    #[error("admin token #{index} {}", token_length_problem(*bytes).unwrap_or_default())]
    Length { index: usize, bytes: usize },
    #[error("admin token #{index} may hold only visible ASCII characters (no spaces)")]
    Characters { index: usize },
    #[error("admin token #{index} repeats token #{first}")]
    Duplicate { index: usize, first: usize },
    #[error("admin token #{index}: tenant {tenant:?} must match ^[A-Za-z0-9_.-]{{1,64}}$")]
    Tenant { index: usize, tenant: Box<str> },
}

/// Why a token of `bytes` bytes is refused, or `None` when its length is allowed. The one
/// wording of the bound, for `config check` and `serve` alike.
pub fn token_length_problem(bytes: usize) -> Option<String> {
    (!(TOKEN_BYTES_MIN..=TOKEN_BYTES_MAX).contains(&bytes))
        .then(|| format!("must be {TOKEN_BYTES_MIN}–{TOKEN_BYTES_MAX} bytes (got {bytes})"))
}

struct Entry {
    padded: [u8; TOKEN_BYTES_MAX],
    len: u64,
    scope: Scope,
    permissions: Permissions,
}

/// The configured admin tokens; see the module doc.
pub struct Tokens {
    entries: Box<[Entry]>,
}

impl std::fmt::Debug for Tokens {
    /// Never prints a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// Admin tokens: `(token, None)` is scoped to every tenant, `(token, Some(tenant))` to
    /// one; each holds the `admin` permission only.
    pub fn new<T, S>(tokens: &[(T, Option<S>)]) -> Result<Self, TokenConfigError>
    where
        T: AsRef<str>,
        S: AsRef<str>,
    {
        let specs: Vec<TokenSpec> = tokens
            .iter()
            .map(|(token, tenant)| TokenSpec {
                token: token.as_ref().to_owned(),
                tenant: tenant.as_ref().map(|t| t.as_ref().to_owned()),
                permissions: Permissions::ADMIN,
            })
            .collect();
        Self::with_permissions(&specs)
    }

    /// Tokens with their tenant reach and permissions.
    pub fn with_permissions(tokens: &[TokenSpec]) -> Result<Self, TokenConfigError> {
        if tokens.len() > TOKENS_MAX {
            return Err(TokenConfigError::TooMany {
                count: tokens.len(),
            });
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(tokens.len());
        for (index, spec) in tokens.iter().enumerate() {
            let (token, tenant) = (spec.token.as_bytes(), spec.tenant.as_deref());
            check_token(index, token)?;
            let first = entries.iter().position(|e| e.bytes() == token);
            if let Some(first) = first {
                return Err(TokenConfigError::Duplicate { index, first });
            }
            let scope = match tenant {
                None => Scope::All,
                Some(t) if is_tenant_id(t) => Scope::Tenant(t.into()),
                Some(t) => {
                    let tenant = shown(t).into();
                    return Err(TokenConfigError::Tenant { index, tenant });
                }
            };
            entries.push(Entry {
                padded: pad(token),
                len: token.len() as u64,
                scope,
                permissions: spec.permissions,
            });
        }
        Ok(Tokens {
            entries: entries.into(),
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tenant scope of an admin token in an `Authorization` header value (`None`: no
    /// header); a token without the `admin` permission is `Lacks(Admin)`.
    pub fn authorize(&self, header: Option<&str>) -> Result<Scope, AuthError> {
        self.grant(header, Permission::Admin).map(|g| g.scope)
    }

    /// Whether any token holds `need` (the admin API is on only if one holds `admin`).
    pub fn any_with(&self, need: Permission) -> bool {
        self.entries.iter().any(|e| e.permissions.has(need))
    }

    /// The token in an `Authorization` header value, if it holds `need`.
    pub fn grant(&self, header: Option<&str>, need: Permission) -> Result<Grant, AuthError> {
        let missing = match need {
            Permission::Admin => AuthError::Missing,
            other => AuthError::MissingFor(other),
        };
        let header = header.ok_or(missing)?;
        let token = bearer(header).ok_or(AuthError::NotBearer)?.as_bytes();
        if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::InvalidToken);
        }
        let presented = pad(token);
        let len = token.len() as u64;
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let hit = entry.padded[..].ct_eq(&presented[..]) & entry.len.ct_eq(&len);
            index.conditional_assign(&(i as u32), hit);
            found |= hit;
        }
        if !bool::from(found) {
            return Err(AuthError::InvalidToken);
        }
        let entry = &self.entries[index as usize];
        if !entry.permissions.has(need) {
            return Err(AuthError::Lacks(need));
        }
        Ok(Grant {
            index: index as usize,
            scope: entry.scope.clone(),
        })
    }
}

impl Entry {
    /// Only for the duplicate check at construction; not constant time.
    fn bytes(&self) -> &[u8] {
        &self.padded[..self.len as usize]
    }
}

fn check_token(index: usize, token: &[u8]) -> Result<(), TokenConfigError> {
    if token_length_problem(token.len()).is_some() {
        let bytes = token.len();
        return Err(TokenConfigError::Length { index, bytes });
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(TokenConfigError::Characters { index });
    }
    Ok(())
}

fn pad(token: &[u8]) -> [u8; TOKEN_BYTES_MAX] {
    let mut padded = [0u8; TOKEN_BYTES_MAX];
    padded[..token.len()].copy_from_slice(token);
    padded
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer(header: &str) -> Option<&str> {
    let header = header.trim_matches([' ', '\t']);
    let (scheme, token) = header.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_start_matches([' ', '\t']);
    (!token.contains([' ', '\t'])).then_some(token)
}

/// A client-chosen string (a tenant, a provider, an id) cut for a message.
pub(crate) fn shown(s: &str) -> &str {
    const SHOWN_CHARS_MAX: usize = 64;
    match s.char_indices().nth(SHOWN_CHARS_MAX) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "root-token-0123456789abcdef";
    const ACME: &str = "acme-token-0123456789abcdef";
    const ACME_PREFIX: &str = "acme-token-0123456789abcde";

    fn tokens() -> Tokens {
        Tokens::new(&[(ROOT, None), (ACME, Some("acme"))]).unwrap()
    }

    /// Each configured token yields its own scope; the comparison finds the right entry
    /// whatever its position.
    #[test]
    fn each_token_gets_its_scope() {
        let t = tokens();
        let bearer = |tok: &str| format!("Bearer {tok}");
        assert_eq!(t.authorize(Some(&bearer(ROOT))), Ok(Scope::All));
        let acme = Scope::Tenant("acme".into());
        assert_eq!(t.authorize(Some(&bearer(ACME))), Ok(acme.clone()));
        assert_eq!(t.authorize(Some(&format!("bearer  {ACME} "))), Ok(acme));
    }

    /// A prefix, an extension or a same-length variant of a token is not that token: the
    /// length is compared as well as the padded bytes.
    #[test]
    fn near_misses_are_refused() {
        let t = tokens();
        for tok in [
            ACME_PREFIX,
            "acme-token-0123456789abcdefX",
            "acme-token-0123456789abcdeg",
        ] {
            let header = format!("Bearer {tok}");
            assert_eq!(
                t.authorize(Some(&header)),
                Err(AuthError::InvalidToken),
                "{tok}"
            );
        }
        let long = format!("Bearer {}", "x".repeat(TOKEN_BYTES_MAX + 1));
        assert_eq!(t.authorize(Some(&long)), Err(AuthError::InvalidToken));
        let nul = format!("Bearer {ACME}\0");
        assert_eq!(t.authorize(Some(&nul)), Err(AuthError::InvalidToken));
    }

    #[test]
    fn missing_and_malformed_headers_are_unauthorized() {
        let t = tokens();
        assert_eq!(t.authorize(None), Err(AuthError::Missing));
        for header in ["", "Bearer", "Bearer ", ROOT, &format!("Basic {ROOT}")] {
            let err = t.authorize(Some(header)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Unauthorized, "{header:?}");
        }
        let two = format!("Bearer {ROOT} {ACME}");
        assert_eq!(t.authorize(Some(&two)), Err(AuthError::NotBearer));
    }

    #[test]
    fn no_tokens_means_no_access() {
        let t = Tokens::new::<&str, &str>(&[]).unwrap();
        let header = format!("Bearer {ROOT}");
        assert_eq!(t.authorize(Some(&header)), Err(AuthError::InvalidToken));
    }

    #[test]
    fn tenant_scope_is_forbidden_elsewhere() {
        let acme = Scope::Tenant("acme".into());
        assert!(acme.allows("acme") && !acme.allows("globex") && !acme.allows("acm"));
        let err = acme.require("globex").unwrap_err();
        assert_eq!(err.code(), ErrorCode::Forbidden);
        assert_eq!(acme.require_all().unwrap_err().code(), ErrorCode::Forbidden);
        assert!(Scope::All.require("globex").is_ok() && Scope::All.require_all().is_ok());
    }

    #[test]
    fn bad_configuration_is_refused() {
        let short = Tokens::new(&[("short", None::<&str>)]).unwrap_err();
        assert_eq!(short, TokenConfigError::Length { index: 0, bytes: 5 });
        let spaced = Tokens::new(&[("has a space in the token", None::<&str>)]).unwrap_err();
        assert_eq!(spaced, TokenConfigError::Characters { index: 0 });
        let dup = Tokens::new(&[(ROOT, None), (ROOT, Some("acme"))]).unwrap_err();
        assert_eq!(dup, TokenConfigError::Duplicate { index: 1, first: 0 });
        let tenant = Tokens::new(&[(ROOT, Some("a/b"))]).unwrap_err();
        assert!(matches!(tenant, TokenConfigError::Tenant { index: 0, .. }));
        assert!(
            !format!("{:?}", tokens()).contains(ROOT),
            "Debug hides tokens"
        );
    }

    /// A token holds only the permissions it was given; the admin check needs `admin`,
    /// and a missing header names the route it was refused on.
    #[test]
    fn permissions_are_checked_after_the_token() {
        let spec = |token: &str, permissions| TokenSpec {
            token: token.into(),
            tenant: Some("acme".into()),
            permissions,
        };
        let results = Permissions::of(&[Permission::Results]);
        let t =
            Tokens::with_permissions(&[spec(ROOT, Permissions::ALL), spec(ACME, results)]).unwrap();
        let header = format!("Bearer {ACME}");
        let grant = t.grant(Some(&header), Permission::Results).unwrap();
        assert_eq!(grant.index, 1);
        let admin = t.authorize(Some(&header)).unwrap_err();
        assert_eq!(admin, AuthError::Lacks(Permission::Admin));
        assert_eq!(admin.code(), ErrorCode::Forbidden);
        assert_eq!(admin.reason(), "missing_scope");
        let missing = t.grant(None, Permission::Results).unwrap_err();
        assert!(
            missing.to_string().starts_with("POST /v1/results needs"),
            "{missing}"
        );
        assert_eq!(missing.code(), ErrorCode::Unauthorized);
        let admin_only = Tokens::new(&[(ROOT, None::<&str>)]).unwrap();
        assert!(admin_only.any_with(Permission::Admin));
        assert!(!admin_only.any_with(Permission::Results));
    }
}
