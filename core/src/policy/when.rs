//! Compiles a fallback rule's `when` object into a `Condition` (SPEC §5).
//!
//! Accepted forms, one clause per key (an operator object may give several):
//! - `"status": "timeout"` → `status == "timeout"`; `"status": ["timeout", "5xx"]` → `in`;
//! - `"count": {">=": 2, "<": 5}` → `count >= 2` and `count < 5`;
//! - `"previous_provider": {"var": "metadata.preferred"}` → equality of two variables;
//! - `">=": [{"var": "count"}, 2]` → an operator key with exactly two operands, each a
//!   literal, a list or `{"var": "path"}`.
//!
//! Variables are resolved to `ContextVar` here so that the engine never compares names.
//! Ill-typed clauses are rejected rather than left to never match: two constants, a list
//! anywhere but the right of `in`, an ordering on a string, or a literal of the wrong type
//! for a typed variable (`"count": "2"`, `"status": 429`). Metadata values may be any scalar.

use super::json::{array, expected, index_path, key_path, shown, Json, Problems};
use super::model::{
    Clause, Condition, ContextVar, Literal, Op, Operand, CLAUSES_PER_RULE_MAX, LIST_LITERALS_MAX,
};

/// A variable path: `[A-Za-z0-9_.-]`, at most this long.
pub const VAR_NAME_BYTES_MAX: usize = 128;

/// The value type of a variable or literal, for rejecting ill-typed clauses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Num,
    Str,
    /// Metadata: any scalar.
    Any,
}

/// Compiles `value` (the `when` of a rule at `path`); problems are recorded, and the clauses
/// that compiled are returned.
pub(crate) fn compile_when(problems: &mut Problems, path: &str, value: &Json) -> Condition {
    let Json::Obj(members) = value else {
        expected(problems, path, "an object", value);
        return Condition::default();
    };
    let mut clauses = Vec::new();
    for (key, operand) in members {
        let at = key_path(path, key);
        match parse_op(key) {
            Some(op) => clauses.extend(operator_clause(problems, &at, op, operand)),
            None => variable_clauses(problems, &at, key, operand, &mut clauses),
        }
    }
    if clauses.len() > CLAUSES_PER_RULE_MAX {
        let message = format!("{} clauses; at most {CLAUSES_PER_RULE_MAX}", clauses.len());
        problems.add(path, message);
    }
    Condition {
        clauses: clauses.into(),
    }
}

fn parse_op(s: &str) -> Option<Op> {
    Some(match s {
        "==" => Op::Eq,
        "!=" => Op::Ne,
        ">" => Op::Gt,
        "<" => Op::Lt,
        ">=" => Op::Ge,
        "<=" => Op::Le,
        "in" => Op::In,
        _ => return None,
    })
}

/// `"op": [a, b]`.
fn operator_clause(problems: &mut Problems, path: &str, op: Op, value: &Json) -> Option<Clause> {
    let items = array(problems, path, value)?;
    let [a, b] = items else {
        problems.add(
            path,
            format!("expected exactly 2 operands, got {}", items.len()),
        );
        return None;
    };
    let lhs = operand(problems, &index_path(path, 0), a);
    let rhs = operand(problems, &index_path(path, 1), b);
    checked(
        problems,
        path,
        Clause {
            op,
            lhs: lhs?,
            rhs: rhs?,
        },
    )
}

/// `"name": scalar | [list] | {"var": "path"} | {"op": operand, …}`.
fn variable_clauses(
    problems: &mut Problems,
    path: &str,
    name: &str,
    value: &Json,
    out: &mut Vec<Clause>,
) {
    let Some(var) = context_var(problems, path, name) else {
        return;
    };
    let var_clause = |op, rhs| Clause {
        op,
        lhs: Operand::Var(var.clone()),
        rhs,
    };
    let members = match value {
        Json::Obj(members) if !is_var_ref(members) => members,
        _ => {
            let Some(rhs) = operand(problems, path, value) else {
                return;
            };
            let op = if matches!(rhs, Operand::List(_)) {
                Op::In
            } else {
                Op::Eq
            };
            out.extend(checked(problems, path, var_clause(op, rhs)));
            return;
        }
    };
    if members.is_empty() {
        problems.add(
            path,
            "expected an operator such as {\">=\": 2}, got an empty object",
        );
    }
    for (key, operand_value) in members {
        let at = key_path(path, key);
        let Some(op) = parse_op(key) else {
            problems.add(&at, "unknown operator (known: ==, !=, >, <, >=, <=, in)");
            continue;
        };
        if let Some(rhs) = operand(problems, &at, operand_value) {
            out.extend(checked(problems, &at, var_clause(op, rhs)));
        }
    }
}

fn is_var_ref(members: &[(String, Json)]) -> bool {
    matches!(members, [(key, _)] if key == "var")
}

/// A literal, a list of literals, or `{"var": "path"}`.
fn operand(problems: &mut Problems, path: &str, value: &Json) -> Option<Operand> {
    match value {
        Json::Arr(items) => list(problems, path, items).map(Operand::List),
        Json::Obj(members) if is_var_ref(members) => {
            let at = key_path(path, "var");
            match &members[0].1 {
                Json::Str(name) => context_var(problems, &at, name).map(Operand::Var),
                other => {
                    expected(problems, &at, "a variable name", other);
                    None
                }
            }
        }
        Json::Obj(_) => {
            expected(
                problems,
                path,
                "a literal, a list or {\"var\": \"name\"}",
                value,
            );
            None
        }
        scalar => literal(problems, path, scalar).map(Operand::Lit),
    }
}

fn list(problems: &mut Problems, path: &str, items: &[Json]) -> Option<Box<[Literal]>> {
    if items.is_empty() || items.len() > LIST_LITERALS_MAX {
        let message = format!(
            "a list needs 1 to {LIST_LITERALS_MAX} values, got {}",
            items.len()
        );
        problems.add(path, message);
        return None;
    }
    let literals: Vec<Literal> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| literal(problems, &index_path(path, i), item))
        .collect();
    (literals.len() == items.len()).then(|| literals.into())
}

fn literal(problems: &mut Problems, path: &str, value: &Json) -> Option<Literal> {
    match value {
        Json::Null => Some(Literal::Null),
        Json::Bool(b) => Some(Literal::Bool(*b)),
        Json::Str(s) => Some(Literal::Str(s.as_str().into())),
        Json::Num(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Some(Literal::Num(f)),
            _ => {
                problems.add(path, format!("number {n} is out of range"));
                None
            }
        },
        Json::Arr(_) | Json::Obj(_) => {
            expected(problems, path, "a string, number, boolean or null", value);
            None
        }
    }
}

/// Resolves a variable path of the fallback context.
fn context_var(problems: &mut Problems, path: &str, name: &str) -> Option<ContextVar> {
    let well_formed = !name.is_empty()
        && name.len() <= VAR_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !well_formed {
        let message = format!(
            "{:?} is neither an operator (==, !=, >, <, >=, <=, in) nor a variable name \
             ([A-Za-z0-9_.-], at most {VAR_NAME_BYTES_MAX} bytes)",
            shown(name)
        );
        problems.add(path, message);
        return None;
    }
    let var = match name {
        "status" | "attempt.status" => ContextVar::Status,
        "previous_provider" | "attempt.previous_provider" => ContextVar::PreviousProvider,
        "message_type" | "task.type" => ContextVar::MessageType,
        "tenant_id" => ContextVar::TenantId,
        "count" | "attempt.count" => ContextVar::AttemptCount,
        "max_latency_ms" | "constraints.max_latency_ms" => ContextVar::MaxLatencyMs,
        "max_cost" | "constraints.max_cost" => ContextVar::MaxCost,
        _ => return metadata_var(problems, path, name),
    };
    Some(var)
}

fn metadata_var(problems: &mut Problems, path: &str, name: &str) -> Option<ContextVar> {
    let key = name.strip_prefix("metadata.").unwrap_or(name);
    let namespace = matches!(key, "metadata" | "attempt" | "constraints" | "task");
    if key.is_empty() || namespace || (key.len() == name.len() && key.contains('.')) {
        let message = format!(
            "unknown variable {:?} (known: status, previous_provider, message_type, tenant_id, \
             count, max_latency_ms, max_cost, metadata.NAME or a plain metadata name)",
            shown(name)
        );
        problems.add(path, message);
        return None;
    }
    Some(ContextVar::Metadata(key.into()))
}

fn var_kind(var: &ContextVar) -> Kind {
    match var {
        ContextVar::AttemptCount | ContextVar::MaxLatencyMs | ContextVar::MaxCost => Kind::Num,
        ContextVar::Status
        | ContextVar::PreviousProvider
        | ContextVar::MessageType
        | ContextVar::TenantId => Kind::Str,
        ContextVar::Metadata(_) => Kind::Any,
    }
}

/// Returns the clause if it is well typed, else records why not.
fn checked(problems: &mut Problems, path: &str, clause: Clause) -> Option<Clause> {
    match type_error(&clause) {
        None => Some(clause),
        Some(message) => {
            problems.add(path, message);
            None
        }
    }
}

fn type_error(clause: &Clause) -> Option<String> {
    let (lhs, rhs) = (&clause.lhs, &clause.rhs);
    let var = match (lhs, rhs) {
        (Operand::Var(v), _) | (_, Operand::Var(v)) => v,
        _ => {
            return Some("compares two constants; name a variable with {\"var\": \"name\"}".into())
        }
    };
    if matches!(lhs, Operand::List(_)) {
        return Some("a list may only be the right-hand operand of `in`".into());
    }
    if matches!(rhs, Operand::List(_)) && clause.op != Op::In {
        return Some("a list needs the `in` operator".into());
    }
    let ordering = matches!(clause.op, Op::Gt | Op::Lt | Op::Ge | Op::Le);
    for side in [lhs, rhs] {
        if let Some(message) = operand_error(side, var_kind(var), ordering) {
            return Some(message);
        }
    }
    None
}

/// Whether one operand fits the kind of the clause's variable (and orders, if `ordering`).
fn operand_error(operand: &Operand, kind: Kind, ordering: bool) -> Option<String> {
    let literals: &[Literal] = match operand {
        Operand::Var(v) if ordering && var_kind(v) == Kind::Str => {
            return Some(format!("{} is a string; it has no order", var_name(v)));
        }
        Operand::Var(v) => {
            let clash = matches!(
                (kind, var_kind(v)),
                (Kind::Num, Kind::Str) | (Kind::Str, Kind::Num)
            );
            return clash.then(|| "compares a number variable with a string variable".into());
        }
        Operand::Lit(lit) => std::slice::from_ref(lit),
        Operand::List(items) => items,
    };
    literals
        .iter()
        .find_map(|lit| literal_error(lit, kind, ordering))
}

fn literal_error(lit: &Literal, kind: Kind, ordering: bool) -> Option<String> {
    let fits = match lit {
        Literal::Num(_) => kind != Kind::Str,
        Literal::Null => !ordering,
        Literal::Str(_) => kind != Kind::Num && !ordering,
        Literal::Bool(_) => kind == Kind::Any && !ordering,
    };
    if fits {
        return None;
    }
    Some(match (ordering, kind) {
        (true, _) => "an ordering (>, <, >=, <=) needs a number".into(),
        (false, Kind::Num) => "this variable is a number; compare it with a number".into(),
        _ => "this variable is a string; quote the value (\"429\", not 429)".into(),
    })
}

fn var_name(var: &ContextVar) -> &str {
    match var {
        ContextVar::Status => "status",
        ContextVar::PreviousProvider => "previous_provider",
        ContextVar::MessageType => "message_type",
        ContextVar::TenantId => "tenant_id",
        ContextVar::AttemptCount => "count",
        ContextVar::MaxLatencyMs => "max_latency_ms",
        ContextVar::MaxCost => "max_cost",
        ContextVar::Metadata(name) => name,
    }
}
