//! The compiled policy model: what every accepted document format (JSON-DSL 1.0, legacy,
//! mixed) is normalised into before the engine sees it.
//!
//! Invariants the parser establishes and the engine relies on (checked by `Policy::check`):
//! - `providers.len() <= PROVIDERS_PER_POLICY_MAX`, so a candidate set fits a `u64` mask;
//! - provider names are unique; weighted providers may be followed by fallback-only
//!   providers (weight 0) that exist only as fallback targets;
//! - every `ProviderIdx` stored anywhere in a policy is `< providers.len()`;
//! - `weights.cumulative[i]` is the sum of `providers[..=i].weight`.
//!
//! Why a separate model and not the serde documents: the documents have three overlapping
//! shapes and string-typed everything; the engine wants indices, integers and
//! pre-resolved variables so that `decide` neither allocates nor compares provider names.

use serde_json::value::RawValue;

/// Providers in one policy; a candidate set is a `u64` bit mask.
pub const PROVIDERS_PER_POLICY_MAX: usize = 64;
/// Extension stages in one policy, all types together (SPEC §7).
pub const STAGES_MAX: usize = 10;
/// Extension stages of one type (pre, validators or post) in one policy (SPEC §7).
pub const STAGES_PER_TYPE_MAX: usize = 5;
/// Fallback rules in one policy.
pub const FALLBACK_RULES_MAX: usize = 32;
/// Clauses in one rule's `when`, and literals in one list operand.
pub const CLAUSES_PER_RULE_MAX: usize = 16;
/// Literals in one list operand.
pub const LIST_LITERALS_MAX: usize = 64;
/// Sticky TTL upper bound (a day, as Beamline's `ttl_seconds` maximum).
pub const STICKY_TTL_MS_MAX: u64 = 86_400_000;
/// A weight of 1.0 (legacy) or 100 (JSON-DSL) is this many units.
pub const WEIGHT_UNITS_FULL: u32 = 1_000_000;

const _: () = assert!(PROVIDERS_PER_POLICY_MAX <= u64::BITS as usize);
const _: () = assert!(STAGES_PER_TYPE_MAX * 3 >= STAGES_MAX);

/// Index of a provider inside one policy's `providers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderIdx(pub u8);

impl ProviderIdx {
    pub fn get(self) -> usize {
        usize::from(self.0)
    }

    pub fn bit(self) -> u64 {
        1u64 << self.0
    }
}

/// Index of a policy inside a `RoutingTable`; per-shard policy state is a `Vec` indexed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicySlot(pub u32);

impl PolicySlot {
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: Box<str>,
    /// Normalised weight in units of `WEIGHT_UNITS_FULL`; 0 = never drawn.
    pub weight: u32,
    /// Shardline addition: declared latency, refined by the observed EWMA.
    pub expected_latency_ms: Option<f64>,
    /// Shardline addition: declared cost per call, refined by the observed EWMA.
    pub cost: Option<f64>,
    /// Shardline addition: capability tags matched against `constraints.require`.
    pub capabilities: Box<[Box<str>]>,
    /// Shardline addition: the provider's own rate limits (`rpm`, `tpm`).
    pub limits: ProviderLimits,
}

/// A provider's requests and tokens per minute (`providers[].rpm`, `providers[].tpm`):
/// a provider at either is no candidate until the sliding minute has room again
/// (`decide::usage`). `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderLimits {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
}

impl ProviderLimits {
    pub fn any(self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }
}

/// How long a provider that answered `rate_limited` (or `429`) is no candidate, when the
/// policy does not say (`cooldown_ms`).
pub const COOLDOWN_MS_DEFAULT: u64 = 10_000;

/// Prefix sums over `providers[].weight`, so that a draw over all providers is a binary
/// search (O(log n)); a draw over a filtered subset walks the mask (O(n), n ≤ 64).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeightTable {
    pub cumulative: Box<[u64]>,
    pub total: u64,
}

impl WeightTable {
    pub fn new(providers: &[Provider]) -> Self {
        let mut sum = 0u64;
        let cumulative = providers
            .iter()
            .map(|p| {
                sum += u64::from(p.weight);
                sum
            })
            .collect();
        WeightTable {
            cumulative,
            total: sum,
        }
    }
}

/// A fallback rule: when `when` holds, retry the previous provider while
/// `attempt.count <= retry`, then go to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackRule {
    pub when: Condition,
    pub retry: u32,
    pub to: ProviderIdx,
    pub backoff: Option<Backoff>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub strategy: BackoffStrategy,
    pub base_ms: u32,
    pub max_ms: u32,
    pub jitter: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffStrategy {
    Exponential,
    Linear,
    Fixed,
}

/// The legacy single `fallback {provider, conditions}`. `all_providers_failed` (or no
/// conditions at all) makes it the last resort of step 9; any other condition string is
/// matched against `attempt.status` in step 6.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyFallback {
    pub to: ProviderIdx,
    pub statuses: Box<[Box<str>]>,
    pub on_all_failed: bool,
}

/// All clauses must hold (an empty condition always holds).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Condition {
    pub clauses: Box<[Clause]>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub op: Op,
    pub lhs: Operand,
    pub rhs: Operand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    /// `lhs` is a member of the list `rhs` (or equal to a scalar `rhs`).
    In,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Var(ContextVar),
    Lit(Literal),
    List(Box<[Literal]>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(Box<str>),
    Num(f64),
    Bool(bool),
    Null,
}

/// A variable of the fallback context (SPEC §5), resolved at compile time so that the
/// engine never compares variable names. Paths: `status`, `previous_provider`,
/// `message_type`, `tenant_id`, `count` / `attempt.count`, `max_latency_ms`, `max_cost`
/// (also under `constraints.`), and any other name or `metadata.NAME` for metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextVar {
    Status,
    PreviousProvider,
    MessageType,
    TenantId,
    AttemptCount,
    MaxLatencyMs,
    MaxCost,
    Metadata(Box<str>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sticky {
    /// The metadata key whose value is the session id (default `session_id`).
    pub session_key: Box<str>,
    pub ttl_ms: u64,
}

/// Circuit-breaker thresholds (SPEC §5, defaults of Beamline's schema).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub timeout_ms: u64,
    pub half_open_max_calls: u32,
    pub error_rate_threshold: f64,
    pub error_rate_window_ms: u64,
    /// Results needed in the window before the error rate may open the circuit.
    pub error_rate_min_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            success_threshold: 2,
            timeout_ms: 60_000,
            half_open_max_calls: 3,
            error_rate_threshold: 0.5,
            error_rate_window_ms: 60_000,
            error_rate_min_calls: 10,
        }
    }
}

/// How step 8 chooses among the candidates of a request without a session (`balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalanceStrategy {
    /// A draw by weight: the behaviour of a policy without `balance`.
    #[default]
    Weighted,
    /// Power of two choices on peak-EWMA latency × (in flight + 1).
    LeastLatency,
    /// Power of two choices on the decayed count of calls in flight.
    LeastOutstanding,
    /// The lowest observed (else declared) cost; ties by weight.
    LowestCost,
}

impl BalanceStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceStrategy::Weighted => "weighted",
            BalanceStrategy::LeastLatency => "least_latency",
            BalanceStrategy::LeastOutstanding => "least_outstanding",
            BalanceStrategy::LowestCost => "lowest_cost",
        }
    }

    /// Whether decisions and results keep the in-flight counts this strategy reads.
    pub fn counts_in_flight(self) -> bool {
        matches!(
            self,
            BalanceStrategy::LeastLatency | BalanceStrategy::LeastOutstanding
        )
    }
}

/// The policy's `balance`: which strategy picks, how often a weighted draw still does
/// (so every provider keeps being measured), and how fast observations are forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub strategy: BalanceStrategy,
    /// Decisions (per million) that still go by weight: `explore_ratio` × 10^6.
    pub explore_ppm: u32,
    /// Half-life of a latency peak and of an in-flight count with no news.
    pub half_life_ms: u64,
}

/// `explore_ratio` when a policy gives none.
pub const EXPLORE_PPM_DEFAULT: u32 = 50_000;
/// `half_life_ms` when a policy gives none.
pub const HALF_LIFE_MS_DEFAULT: u64 = 10_000;
/// The unit of `Balance::explore_ppm`.
pub const EXPLORE_PPM_FULL: u32 = 1_000_000;

const _: () = assert!(EXPLORE_PPM_DEFAULT <= EXPLORE_PPM_FULL);

impl Default for Balance {
    fn default() -> Self {
        Balance {
            strategy: BalanceStrategy::Weighted,
            explore_ppm: EXPLORE_PPM_DEFAULT,
            half_life_ms: HALF_LIFE_MS_DEFAULT,
        }
    }
}

/// One `shadow` entry: a share of decisions also sends a copy of the call to `provider`,
/// whose answer is compared offline and never steers routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shadow {
    /// One of the policy's providers (a shadow-only one is declared with weight 0).
    pub provider: ProviderIdx,
    /// Decisions (per million) that get this shadow: `ratio` × 10^6, in 1..=10^6.
    pub ppm: u32,
}

/// The unit of `Shadow::ppm`; the entries of one policy share it (they sum to ≤ it).
pub const SHADOW_PPM_FULL: u32 = 1_000_000;

/// Whose spend one budget counts, within the policy that declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetScope {
    /// Every decision of the policy.
    Tenant,
    /// One ledger per value of this request `metadata` key; a request without the key is
    /// not counted by the budget.
    Metadata(Box<str>),
}

/// The period a budget's spend is counted over. Every window is a fixed period, so a
/// decision's spend belongs to exactly one window (`decide::budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetWindow {
    /// `1m`, `1h`, `1d`, `30d`: periods of this many milliseconds from the Unix epoch
    /// (so `1d` is the UTC day).
    Fixed(u64),
    /// The UTC calendar day.
    CalendarDay,
    /// The UTC calendar month.
    CalendarMonth,
}

impl BudgetWindow {
    pub const MINUTE: BudgetWindow = BudgetWindow::Fixed(60_000);
    pub const HOUR: BudgetWindow = BudgetWindow::Fixed(3_600_000);
    pub const DAY: BudgetWindow = BudgetWindow::Fixed(86_400_000);
    pub const DAYS_30: BudgetWindow = BudgetWindow::Fixed(30 * 86_400_000);

    /// The name a policy document gives the window.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetWindow::MINUTE => "1m",
            BudgetWindow::HOUR => "1h",
            BudgetWindow::DAY => "1d",
            BudgetWindow::DAYS_30 => "30d",
            BudgetWindow::Fixed(_) => "fixed",
            BudgetWindow::CalendarDay => "calendar_day",
            BudgetWindow::CalendarMonth => "calendar_month",
        }
    }

    pub fn parse(s: &str) -> Option<BudgetWindow> {
        Some(match s {
            "1m" => BudgetWindow::MINUTE,
            "1h" => BudgetWindow::HOUR,
            "1d" => BudgetWindow::DAY,
            "30d" => BudgetWindow::DAYS_30,
            "calendar_day" => BudgetWindow::CalendarDay,
            "calendar_month" => BudgetWindow::CalendarMonth,
            _ => return None,
        })
    }
}

/// One `budgets` entry: limits on the spend of a scope over a window; at least one set.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub scope: BudgetScope,
    pub window: BudgetWindow,
    pub max_cost: Option<f64>,
    pub max_tokens: Option<u64>,
    pub max_requests: Option<u64>,
}

impl Budget {
    /// The scope as a policy document writes it: `tenant` or `metadata.<key>`.
    pub fn scope_name(&self) -> String {
        match &self.scope {
            BudgetScope::Tenant => "tenant".to_owned(),
            BudgetScope::Metadata(key) => format!("metadata.{key}"),
        }
    }
}

/// Entries of a policy's `budgets` list.
pub const BUDGETS_PER_POLICY_MAX: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Pre,
    Validator,
    Post,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFail {
    Block,
    Warn,
    Ignore,
}

/// One extension stage of a policy; the registry (`id` → subject, timeout) is resolved by
/// the transport that runs it.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: Box<str>,
    pub kind: StageKind,
    /// `mode: required` (pre/post) or `on_fail: block` (validators): fail closed.
    pub required: bool,
    /// Validators only; `Block` for pre/post stages.
    pub on_fail: OnFail,
    pub config: Option<Box<RawValue>>,
    pub timeout_ms: Option<u32>,
    pub retry: Option<u32>,
}

impl PartialEq for Stage {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.kind == other.kind
            && self.required == other.required
            && self.on_fail == other.on_fail
            && self.config.as_ref().map(|c| c.get()) == other.config.as_ref().map(|c| c.get())
            && self.timeout_ms == other.timeout_ms
            && self.retry == other.retry
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub tenant: Box<str>,
    pub id: Box<str>,
    /// The document's `version` (e.g. "1.0"), reported as `policy_version`.
    pub version: Box<str>,
    pub providers: Box<[Provider]>,
    pub weights: WeightTable,
    pub fallbacks: Box<[FallbackRule]>,
    pub legacy_fallback: Option<LegacyFallback>,
    pub sticky: Option<Sticky>,
    /// `None` when the breaker is disabled (the default).
    pub circuit_breaker: Option<BreakerConfig>,
    /// `None` when rate limiting is disabled (the default).
    pub rate_limit: Option<RateLimit>,
    /// Step 8's strategy; `Weighted` (today's draw) without `balance`.
    pub balance: Balance,
    pub pre: Box<[Stage]>,
    pub validators: Box<[Stage]>,
    pub post: Box<[Stage]>,
    pub timeout_ms: Option<u32>,
    /// How long a provider stays out after a `rate_limited` result (`cooldown_ms`).
    pub cooldown_ms: u64,
    /// `shadow`: at most one entry is drawn per decision; empty without `shadow`.
    pub shadow: Box<[Shadow]>,
    /// `budgets`: checked at admission and as a candidate filter (`decide::budget`).
    pub budgets: Box<[Budget]>,
}

impl Policy {
    /// Whether the policy's decisions must be taken on the tenant's owner: it counts
    /// per call what must hold exactly over all shards — budgets (settled by results,
    /// which land on the owner) or a provider's `rpm`.
    pub fn owner_decides(&self) -> bool {
        !self.budgets.is_empty() || self.providers.iter().any(|p| p.limits.rpm.is_some())
    }

    /// Whether the policy has any extension stage (pre, validator or post).
    pub fn has_stages(&self) -> bool {
        !(self.pre.is_empty() && self.validators.is_empty() && self.post.is_empty())
    }

    pub fn provider(&self, idx: ProviderIdx) -> &Provider {
        &self.providers[idx.get()]
    }

    pub fn provider_idx(&self, name: &str) -> Option<ProviderIdx> {
        self.providers
            .iter()
            .position(|p| &*p.name == name)
            .map(|i| ProviderIdx(i as u8))
    }

    /// Mask of all providers with weight > 0.
    pub fn weighted_mask(&self) -> u64 {
        self.providers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.weight > 0)
            .fold(0u64, |m, (i, _)| m | (1u64 << i))
    }

    /// Asserts the invariants in the module doc; a violation is a parser bug.
    pub fn check(&self) {
        assert!(!self.providers.is_empty());
        assert!(self.providers.len() <= PROVIDERS_PER_POLICY_MAX);
        assert_eq!(self.weights.cumulative.len(), self.providers.len());
        let n = self.providers.len();
        for rule in self.fallbacks.iter() {
            assert!(rule.to.get() < n);
        }
        if let Some(legacy) = &self.legacy_fallback {
            assert!(legacy.to.get() < n);
        }
        assert!(self.pre.len() + self.validators.len() + self.post.len() <= STAGES_MAX);
        let shadow_ppm: u32 = self.shadow.iter().map(|s| s.ppm).sum();
        assert!(shadow_ppm <= SHADOW_PPM_FULL);
        for s in self.shadow.iter() {
            assert!(s.provider.get() < n && s.ppm > 0);
        }
        assert!(self.budgets.len() <= BUDGETS_PER_POLICY_MAX);
        for b in self.budgets.iter() {
            assert!(b.max_cost.is_some() || b.max_tokens.is_some() || b.max_requests.is_some());
        }
    }
}
