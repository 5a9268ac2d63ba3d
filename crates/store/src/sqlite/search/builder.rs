//! Accumulates bound parameters and fresh table aliases while SQL text is assembled.

use rusqlite::types::Value as SqlValue;

/// Bound arguments (numbered placeholders, so fragments may be assembled in any order) and an
/// alias counter.
#[derive(Default)]
pub(crate) struct Sql {
    pub(crate) args: Vec<SqlValue>,
    aliases: usize,
}

impl Sql {
    /// Binds a value and returns its placeholder.
    pub(crate) fn arg(&mut self, v: impl Into<SqlValue>) -> String {
        self.args.push(v.into());
        format!("?{}", self.args.len())
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
/// that can use an index (`col >= prefix AND col < upper`).
pub(crate) fn prefix_upper(prefix: &str) -> String {
    let mut s = prefix.to_owned();
    s.push(char::MAX);
    s
}
