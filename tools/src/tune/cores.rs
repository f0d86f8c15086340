//! The core plan: which cores run shards, which take network interrupts, which run
//! nats-server and the rest of the system (housekeeping).
//!
//! A profile writes rules over positions in the machine's core list, not cpu numbers:
//! `first 1`, `last 2`, `at 1`, `all`, and for shards `rest` (every core no other role
//! takes). `[[cores.when]]` blocks override roles from a core count up, so "nats-server
//! shares core 0 on a small box, gets core 1 from 8 cores" is one profile. The same rules
//! then give a plan for a 2-core laptop and a 64-core node; `--cores` plans for a machine
//! other than the one at hand.
//!
//! Invariant of a plan: shards are never empty, and with `exclusive` they share no core
//! with another role (a shard core taking interrupts is exactly the p99 outlier the
//! low-latency profile exists to remove). A rule that cannot be met on the machine is an
//! error naming the rule, never a silently shrunk plan.

use serde::Deserialize;
use shards::topology::format_cpu_list;
use shards::CoreId;

/// `[[cores.when]]` blocks in one profile.
pub const CORE_OVERRIDES_MAX: usize = 16;

/// One role's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Rule {
    /// Every core.
    All,
    /// The first `n` cores.
    First(usize),
    /// The last `n` cores.
    Last(usize),
    /// The cores at positions `from..=to` (0-based) of the machine's core list.
    At(usize, usize),
    /// Shards only: every core no other role takes.
    Rest,
}

impl TryFrom<String> for Rule {
    type Error = String;

    fn try_from(text: String) -> Result<Rule, String> {
        let bad = || {
            format!(
                "core rule {text:?}: use `all`, `rest`, `first N`, `last N`, `at I` or `at I-J`"
            )
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let count = |w: &str| w.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(bad);
        match words.as_slice() {
            ["all"] => Ok(Rule::All),
            ["rest"] => Ok(Rule::Rest),
            ["first", n] => Ok(Rule::First(count(n)?)),
            ["last", n] => Ok(Rule::Last(count(n)?)),
            ["at", range] => {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                let from: usize = from.parse().map_err(|_| bad())?;
                let to: usize = to.parse().map_err(|_| bad())?;
                if from > to {
                    return Err(bad());
                }
                Ok(Rule::At(from, to))
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::All => f.write_str("all"),
            Rule::Rest => f.write_str("rest"),
            Rule::First(n) => write!(f, "first {n}"),
            Rule::Last(n) => write!(f, "last {n}"),
            Rule::At(a, b) if a == b => write!(f, "at {a}"),
            Rule::At(a, b) => write!(f, "at {a}-{b}"),
        }
    }
}

/// `[cores]` of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreRules {
    pub shards: Rule,
    pub irq: Rule,
    pub nats: Rule,
    pub housekeeping: Rule,
    /// Shards share no core with the other roles.
    #[serde(default)]
    pub exclusive: bool,
    pub why: String,
    /// Overrides from a core count up, applied in order.
    #[serde(default)]
    pub when: Vec<CoreOverride>,
}

/// `[[cores.when]]`: roles that change on machines with at least `cores_min` cores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreOverride {
    pub cores_min: usize,
    pub shards: Option<Rule>,
    pub irq: Option<Rule>,
    pub nats: Option<Rule>,
    pub housekeeping: Option<Rule>,
}

/// The roles' cores on one machine, each sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorePlan {
    pub cores: Vec<CoreId>,
    pub shards: Vec<CoreId>,
    pub irq: Vec<CoreId>,
    pub nats: Vec<CoreId>,
    pub housekeeping: Vec<CoreId>,
    pub exclusive: bool,
}

impl CoreRules {
    /// Checks what can be checked without a machine.
    pub fn validate(&self) -> Result<(), String> {
        if self.why.trim().is_empty() {
            return Err("cores.why: empty: say why the cores are laid out so".into());
        }
        if self.when.len() > CORE_OVERRIDES_MAX {
            return Err(format!(
                "more than {CORE_OVERRIDES_MAX} [[cores.when]] blocks"
            ));
        }
        let mut roles = vec![self.irq, self.nats, self.housekeeping];
        for o in &self.when {
            roles.extend([o.irq, o.nats, o.housekeeping].into_iter().flatten());
        }
        if roles.contains(&Rule::Rest) {
            return Err("cores: only `shards` may be `rest`".into());
        }
        Ok(())
    }

    /// The plan for a machine whose usable cores are `cores` (sorted, non-empty).
    pub fn plan(&self, cores: &[CoreId]) -> Result<CorePlan, String> {
        assert!(!cores.is_empty(), "a machine has at least one core");
        let (mut shards, mut irq, mut nats, mut housekeeping) =
            (self.shards, self.irq, self.nats, self.housekeeping);
        for o in self.when.iter().filter(|o| cores.len() >= o.cores_min) {
            shards = o.shards.unwrap_or(shards);
            irq = o.irq.unwrap_or(irq);
            nats = o.nats.unwrap_or(nats);
            housekeeping = o.housekeeping.unwrap_or(housekeeping);
        }
        let irq = pick("irq", irq, cores)?;
        let nats = pick("nats", nats, cores)?;
        let housekeeping = pick("housekeeping", housekeeping, cores)?;
        let shards = match shards {
            Rule::Rest => cores
                .iter()
                .filter(|c| !irq.contains(c) && !nats.contains(c) && !housekeeping.contains(c))
                .copied()
                .collect(),
            rule => pick("shards", rule, cores)?,
        };
        let n = cores.len();
        if shards.is_empty() {
            return Err(format!(
                "no core is left for shards on {n} core(s) ({}): the profile needs more \
                 cores; plan for another machine with --cores or use the dev profile",
                format_cpu_list(cores)
            ));
        }
        let plan = CorePlan {
            cores: cores.to_vec(),
            shards,
            irq,
            nats,
            housekeeping,
            exclusive: self.exclusive,
        };
        if self.exclusive && !plan.shared_with_shards().is_empty() {
            return Err(format!(
                "shards share core(s) {} with other roles on {n} core(s), but the profile \
                 is exclusive",
                format_cpu_list(&plan.shared_with_shards())
            ));
        }
        Ok(plan)
    }
}

impl CorePlan {
    /// Shard cores that another role (interrupts, nats-server, housekeeping) also uses.
    pub fn shared_with_shards(&self) -> Vec<CoreId> {
        let others = [&self.irq, &self.nats, &self.housekeeping];
        let shared = self
            .shards
            .iter()
            .filter(|c| others.iter().any(|o| o.contains(c)));
        shared.copied().collect()
    }

    /// Replaces `{shards}`, `{irq}`, `{nats}` and `{housekeeping}` with cpu lists.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{shards}", &format_cpu_list(&self.shards))
            .replace("{irq}", &format_cpu_list(&self.irq))
            .replace("{nats}", &format_cpu_list(&self.nats))
            .replace("{housekeeping}", &format_cpu_list(&self.housekeeping))
    }
}

fn pick(role: &str, rule: Rule, cores: &[CoreId]) -> Result<Vec<CoreId>, String> {
    let n = cores.len();
    let short = |need: usize| {
        format!("cores.{role} = \"{rule}\" needs at least {need} core(s); the machine has {n}")
    };
    let picked = match rule {
        Rule::All => cores,
        Rule::First(k) if k > n => return Err(short(k)),
        Rule::First(k) => &cores[..k],
        Rule::Last(k) if k > n => return Err(short(k)),
        Rule::Last(k) => &cores[n - k..],
        Rule::At(_, to) if to >= n => return Err(short(to + 1)),
        Rule::At(from, to) => &cores[from..=to],
        Rule::Rest => unreachable!("validated at load: only shards may be `rest`"),
    };
    Ok(picked.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> CoreRules {
        toml::from_str(text).unwrap()
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<CoreId> {
        range.map(CoreId).collect()
    }

    const LOW_LATENCY: &str = r#"
        shards = "rest"
        irq = "first 1"
        nats = "first 1"
        housekeeping = "first 1"
        exclusive = true
        why = "test"
        [[when]]
        cores_min = 8
        nats = "at 1"
    "#;

    #[test]
    fn rest_takes_what_the_other_roles_leave_and_overrides_apply_from_their_count() {
        let r = rules(LOW_LATENCY);
        let two = r.plan(&ids(0..2)).unwrap();
        assert_eq!(
            (two.shards, two.irq, two.nats),
            (ids(1..2), ids(0..1), ids(0..1))
        );
        let eight = r.plan(&ids(0..8)).unwrap();
        assert_eq!((eight.shards, eight.nats), (ids(2..8), ids(1..2)));
    }

    #[test]
    fn a_plan_that_leaves_no_shard_core_is_an_error() {
        let err = rules(LOW_LATENCY).plan(&ids(0..1)).unwrap_err();
        assert!(err.contains("no core is left for shards"), "{err}");
    }

    #[test]
    fn exclusive_refuses_shards_on_an_interrupt_core() {
        let text = LOW_LATENCY.replace("\"rest\"", "\"all\"");
        let err = rules(&text).plan(&ids(0..4)).unwrap_err();
        assert!(err.contains("share core(s) 0"), "{err}");
    }

    #[test]
    fn rule_syntax() {
        let bad = Rule::try_from("second 2".to_owned()).unwrap_err();
        assert!(bad.contains("first N"), "{bad}");
        assert_eq!(Rule::try_from("at 2-3".to_owned()), Ok(Rule::At(2, 3)));
        assert!(Rule::try_from("first 0".to_owned()).is_err());
        let at = rules(&LOW_LATENCY.replace("\"at 1\"", "\"at 9\""));
        assert!(at
            .plan(&ids(0..8))
            .unwrap_err()
            .contains("needs at least 10"));
    }
}
