//! Evaluates a compiled fallback `when` against the request context (SPEC §5).
//!
//! The context is a flat map — `status`, `previous_provider`, `message_type`, `tenant_id`,
//! `count`, every metadata key and the numeric constraints — read straight from the
//! request (and the metadata that pre-processors merged), never materialised: evaluating
//! a rule allocates nothing.
//!
//! Matching rules, chosen to be useful rather than surprising:
//! - a string and a number compare as numbers when the string parses as one
//!   (metadata `"tier": "2"` matches `2`);
//! - a status pattern `Nxx` (e.g. `5xx`) matches any three-digit status starting with `N`;
//! - a missing variable satisfies only `!=` (it is not equal to anything), except that it
//!   equals `null`;
//! - when no candidate is left (step 9), `status` also takes the values
//!   `circuit_breaker_open` (if open circuits emptied the candidates) and
//!   `all_providers_failed`, so rules written for those conditions fire there.

use std::borrow::Cow;

use crate::contract::{DecideRequest, Scalar};
use crate::policy::{Clause, Condition, ContextVar, Literal, Op, Operand};

pub const STATUS_CIRCUIT_OPEN: &str = "circuit_breaker_open";
pub const STATUS_ALL_FAILED: &str = "all_providers_failed";

/// The request as seen by rules.
pub struct RuleCtx<'r, 'a> {
    pub req: &'r DecideRequest<'a>,
    /// Metadata merged by pre-processors; wins over the request's.
    pub overlay: &'r [(Box<str>, Scalar<'static>)],
    /// Step 9: `Some(open circuits emptied the candidates)`.
    pub no_candidates: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Val<'r> {
    Str(&'r str),
    Num(f64),
    Bool(bool),
    Null,
    Missing,
}

impl<'r> Val<'r> {
    fn of_scalar(s: &'r Scalar<'_>) -> Val<'r> {
        match s {
            Scalar::Str(s) => Val::Str(s),
            Scalar::Num(n) => Val::Num(*n),
            Scalar::Bool(b) => Val::Bool(*b),
            Scalar::Null => Val::Null,
        }
    }

    fn of_literal(l: &'r Literal) -> Val<'r> {
        match l {
            Literal::Str(s) => Val::Str(s),
            Literal::Num(n) => Val::Num(*n),
            Literal::Bool(b) => Val::Bool(*b),
            Literal::Null => Val::Null,
        }
    }

    fn num(self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(n),
            Val::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

impl RuleCtx<'_, '_> {
    pub fn metadata(&self, key: &str) -> Option<&Scalar<'_>> {
        self.overlay
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v)
            .or_else(|| self.req.metadata.get(key))
    }

    /// Up to three values: status is multi-valued in step 9, the rest single-valued.
    fn values(&self, var: &ContextVar) -> ([Val<'_>; 3], usize) {
        let one = |v| ([v, Val::Missing, Val::Missing], 1);
        let attempt = self.req.attempt.as_ref();
        match var {
            ContextVar::Status => self.statuses(),
            ContextVar::PreviousProvider => {
                one(attempt.map_or(Val::Missing, |a| Val::Str(&a.previous_provider)))
            }
            ContextVar::MessageType => one(Val::Str(&self.req.task.kind)),
            ContextVar::TenantId => one(Val::Str(&self.req.tenant_id)),
            ContextVar::AttemptCount => {
                one(attempt.map_or(Val::Missing, |a| Val::Num(f64::from(a.count))))
            }
            ContextVar::MaxLatencyMs => one(self
                .req
                .constraints
                .max_latency_ms
                .map_or(Val::Missing, Val::Num)),
            ContextVar::MaxCost => {
                one(self.req.constraints.max_cost.map_or(Val::Missing, Val::Num))
            }
            ContextVar::Metadata(key) => {
                one(self.metadata(key).map_or(Val::Missing, Val::of_scalar))
            }
        }
    }

    fn statuses(&self) -> ([Val<'_>; 3], usize) {
        let mut out = [Val::Missing; 3];
        let mut n = 0;
        if let Some(a) = &self.req.attempt {
            out[n] = Val::Str(&a.status);
            n += 1;
        }
        if let Some(open) = self.no_candidates {
            if open {
                out[n] = Val::Str(STATUS_CIRCUIT_OPEN);
                n += 1;
            }
            out[n] = Val::Str(STATUS_ALL_FAILED);
            n += 1;
        }
        if n == 0 {
            return ([Val::Missing; 3], 1);
        }
        (out, n)
    }

    pub fn holds(&self, condition: &Condition) -> bool {
        condition.clauses.iter().all(|c| self.clause(c))
    }

    fn clause(&self, clause: &Clause) -> bool {
        let status = matches!(clause.lhs, Operand::Var(ContextVar::Status))
            || matches!(clause.rhs, Operand::Var(ContextVar::Status));
        let (lhs, n) = self.operand_values(&clause.lhs);
        lhs[..n]
            .iter()
            .any(|&l| self.against(clause.op, l, &clause.rhs, status))
    }

    fn operand_values<'s>(&'s self, op: &'s Operand) -> ([Val<'s>; 3], usize) {
        match op {
            Operand::Var(v) => self.values(v),
            Operand::Lit(l) => ([Val::of_literal(l), Val::Missing, Val::Missing], 1),
            // A list on the left is unusual; treat it as "any element".
            Operand::List(items) => {
                let mut out = [Val::Missing; 3];
                let n = items.len().min(3);
                for (o, l) in out.iter_mut().zip(items.iter()) {
                    *o = Val::of_literal(l);
                }
                (out, n.max(1))
            }
        }
    }

    fn against(&self, op: Op, l: Val<'_>, rhs: &Operand, status: bool) -> bool {
        match rhs {
            Operand::List(items) => {
                let any = items.iter().any(|i| equal(l, Val::of_literal(i), status));
                match op {
                    Op::Eq | Op::In => any,
                    Op::Ne => !any,
                    _ => false,
                }
            }
            _ => {
                let (r, n) = self.operand_values(rhs);
                r[..n].iter().any(|&r| compare(op, l, r, status))
            }
        }
    }
}

fn compare(op: Op, l: Val<'_>, r: Val<'_>, status: bool) -> bool {
    match op {
        Op::Eq | Op::In => equal(l, r, status),
        Op::Ne => !equal(l, r, status),
        Op::Gt | Op::Lt | Op::Ge | Op::Le => match (l.num(), r.num()) {
            (Some(a), Some(b)) => match op {
                Op::Gt => a > b,
                Op::Lt => a < b,
                Op::Ge => a >= b,
                _ => a <= b,
            },
            _ => false,
        },
    }
}

fn equal(l: Val<'_>, r: Val<'_>, status: bool) -> bool {
    match (l, r) {
        (Val::Missing | Val::Null, Val::Missing | Val::Null) => true,
        (Val::Missing, _) | (_, Val::Missing) => false,
        (Val::Str(a), Val::Str(b)) => a == b || (status && status_matches(a, b)),
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (a, b) => matches!((a.num(), b.num()), (Some(x), Some(y)) if x == y),
    }
}

/// `5xx` matches `503` (either side may be the pattern).
pub fn status_matches(a: &str, b: &str) -> bool {
    fn pattern_hit(p: &[u8], s: &[u8]) -> bool {
        p.len() == 3
            && p[0].is_ascii_digit()
            && p[1..].eq_ignore_ascii_case(b"xx")
            && s.len() == 3
            && s.iter().all(u8::is_ascii_digit)
            && s[0] == p[0]
    }
    a == b || pattern_hit(a.as_bytes(), b.as_bytes()) || pattern_hit(b.as_bytes(), a.as_bytes())
}

/// The session value of a sticky key as bytes to fingerprint; booleans and null are not
/// session ids.
pub fn session_bytes<'s>(value: &'s Scalar<'_>, buf: &'s mut [u8; 9]) -> Option<&'s [u8]> {
    match value {
        Scalar::Str(Cow::Borrowed(s)) => Some(s.as_bytes()),
        Scalar::Str(Cow::Owned(s)) => Some(s.as_bytes()),
        Scalar::Num(n) => {
            // Tagged so that the number 1 and the string "\x00..." never collide.
            buf[0] = 0xff;
            buf[1..].copy_from_slice(&n.to_bits().to_le_bytes());
            Some(&buf[..])
        }
        Scalar::Bool(_) | Scalar::Null => None,
    }
}
