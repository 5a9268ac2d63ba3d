//! Accumulates bound parameters and fresh table aliases while SQL text is assembled.

use super::{Dialect, SqlArg};

/// Bound arguments (numbered placeholders, so fragments may be assembled in any order) and an
/// alias counter, for one dialect.
pub(crate) struct Sql {
    pub(crate) args: Vec<SqlArg>,
    pub(crate) dialect: Dialect,
    aliases: usize,
    /// On Citus, the placeholder of the one shard every row of the statement is on, when the
    /// statement reads a single shard (a resource by id, a patient's compartment).
    pub(crate) pin: Option<String>,
}

impl Sql {
    /// An empty statement for a dialect.
    pub(crate) fn new(dialect: Dialect) -> Sql {
        Sql {
            args: Vec::new(),
            dialect,
            aliases: 0,
            pin: None,
        }
    }

    /// [`Dialect::same_row`], naming the pinned shard too when the statement has one: Citus
    /// routes a statement to one shard only when every distributed table in it, also in a
    /// subquery under `OR` (as in the visibility predicate), is restricted to that shard by a
    /// constant.
    pub(crate) fn same_row(&self, x: &str, r: &str) -> String {
        match (&self.pin, self.dialect.distributed()) {
            (Some(pin), true) => format!("{x}.shard = {pin} AND {}", self.dialect.same_row(x, r)),
            _ => self.dialect.same_row(x, r),
        }
    }

    /// Binds a value and returns its placeholder.
    pub(crate) fn arg(&mut self, v: impl Into<SqlArg>) -> String {
        self.args.push(v.into());
        self.dialect.placeholder(self.args.len())
    }

    /// Binds a list of integers and returns a parenthesized placeholder list for `IN`.
    pub(crate) fn int_list(&mut self, vs: &[i64]) -> String {
        let parts: Vec<String> = vs.iter().map(|v| self.arg(*v)).collect();
        format!("({})", parts.join(", "))
    }

    /// A table alias not used elsewhere in the statement.
    pub(crate) fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    /// A condition that is constantly true or false.
    pub(crate) fn lit(&self, b: bool) -> String {
        self.dialect.bool_literal(b).to_owned()
    }
}

/// `s` with a LIKE pattern's metacharacters escaped (escape character `\`).
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The exclusive upper bound of the strings starting with `prefix`, for a range predicate
/// that can use an index (`col >= prefix AND col < upper`). Both backends compare text
/// bytewise (SQLite's BINARY, PostgreSQL's `COLLATE "C"`), where U+10FFFF sorts after every
/// other character.
pub(crate) fn prefix_upper(prefix: &str) -> String {
    let mut s = prefix.to_owned();
    s.push(char::MAX);
    s
}
