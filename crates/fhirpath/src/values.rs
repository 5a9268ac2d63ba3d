//! Operations on single values: construction, equality, equivalence, ordering, conversion.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::str::FromStr;

use serde_json::{Number, Value};

use crate::temporal::Temporal;
use crate::{Error, Item};

pub(crate) fn boolean(b: bool) -> Item<'static> {
    owned(Value::Bool(b), "Boolean")
}

pub(crate) fn integer(i: i64) -> Item<'static> {
    owned(Value::Number(i.into()), "Integer")
}

pub(crate) fn string(s: String) -> Item<'static> {
    owned(Value::String(s), "String")
}

/// A decimal result; `None` for NaN and infinities, which FHIRPath cannot represent.
pub(crate) fn decimal(f: f64) -> Option<Item<'static>> {
    Number::from_f64(f).map(|n| owned(Value::Number(n), "Decimal"))
}

pub(crate) fn owned(value: Value, type_name: &'static str) -> Item<'static> {
    Item {
        value: Cow::Owned(value),
        type_name: Some(Cow::Borrowed(type_name)),
    }
}

/// A numeric value, keeping integers exact.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    Int(i64),
    Dec(f64),
}

impl Num {
    pub fn of(v: &Value) -> Option<Num> {
        let Value::Number(n) = v else { return None };
        match n.as_i64() {
            Some(i) => Some(Num::Int(i)),
            None => n.as_f64().map(Num::Dec),
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Dec(f) => f,
        }
    }

    fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }
}

fn is_temporal_type(item: &Item) -> bool {
    matches!(
        item.type_name.as_deref(),
        Some("date" | "dateTime" | "instant" | "time" | "Date" | "DateTime" | "Time")
    )
}

fn is_quantity(item: &Item) -> bool {
    item.type_name.as_deref().is_some_and(|t| {
        matches!(
            t,
            "Quantity"
                | "Age"
                | "Distance"
                | "Duration"
                | "Count"
                | "SimpleQuantity"
                | "MoneyQuantity"
        )
    })
}

/// Parses both strings as dates when either item is typed as one.
fn temporals(a: &Item, b: &Item) -> Option<(Temporal, Temporal)> {
    if !(is_temporal_type(a) || is_temporal_type(b)) {
        return None;
    }
    match (&*a.value, &*b.value) {
        (Value::String(x), Value::String(y)) => Some((Temporal::parse(x)?, Temporal::parse(y)?)),
        _ => None,
    }
}

/// FHIRPath `=` on single items; `None` when undecidable (dates of different precision).
pub(crate) fn equals(a: &Item, b: &Item) -> Option<bool> {
    if let Some((x, y)) = temporals(a, b) {
        return x.compare(&y).map(|o| o == Ordering::Equal);
    }
    if is_quantity(a) && is_quantity(b) {
        return quantity_cmp(&a.value, &b.value).map(|o| o == Ordering::Equal);
    }
    Some(json_equals(&a.value, &b.value))
}

/// Deep equality where numbers compare by value (`1.0` = `1`) and key order is irrelevant.
pub(crate) fn json_equals(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => {
            matches!(
                Num::of(a).zip(Num::of(b)).and_then(|(x, y)| x.cmp(y)),
                Some(Ordering::Equal)
            )
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equals(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_equals(v, w))
        }
        _ => a == b,
    }
}

/// FHIRPath `~` on single items.
pub(crate) fn equivalent(a: &Item, b: &Item) -> bool {
    if let Some((x, y)) = temporals(a, b) {
        return x.compare(&y) == Some(Ordering::Equal);
    }
    json_equivalent(&a.value, &b.value)
}

fn json_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => normalize(x) == normalize(y),
        (Value::Number(x), Value::Number(y)) => {
            // Compare at the precision of the less precise operand.
            let places = decimals(&x.to_string()).min(decimals(&y.to_string()));
            match (Num::of(a), Num::of(b)) {
                (Some(p), Some(q)) => {
                    let scale = 10f64.powi(places as i32);
                    (p.as_f64() * scale).round() == (q.as_f64() * scale).round()
                }
                _ => false,
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equivalent(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_equivalent(v, w))
        }
        _ => a == b,
    }
}

fn decimals(s: &str) -> usize {
    s.split_once('.').map_or(0, |(_, f)| {
        f.bytes().take_while(|b| b.is_ascii_digit()).count()
    })
}

fn normalize(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn quantity_unit(v: &Value) -> Option<&str> {
    v.get("code")
        .or_else(|| v.get("unit"))
        .and_then(Value::as_str)
}

/// Orders two quantities of the same unit (no unit conversion); `None` otherwise.
fn quantity_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    let (x, y) = (Num::of(a.get("value")?)?, Num::of(b.get("value")?)?);
    let (ua, ub) = (quantity_unit(a), quantity_unit(b));
    if ua != ub && !(is_unity(ua) && is_unity(ub)) {
        return None;
    }
    x.cmp(y)
}

fn is_unity(unit: Option<&str>) -> bool {
    matches!(unit, None | Some("1"))
}

/// FHIRPath ordering (`<`, `>`, …); `Ok(None)` when undecidable, an error for values of
/// incomparable kinds.
pub(crate) fn compare(a: &Item, b: &Item) -> Result<Option<Ordering>, Error> {
    if let Some((x, y)) = temporals(a, b) {
        return Ok(x.compare(&y));
    }
    match (&*a.value, &*b.value) {
        (Value::Number(_), Value::Number(_)) => Ok(Num::of(&a.value)
            .zip(Num::of(&b.value))
            .and_then(|(x, y)| x.cmp(y))),
        (Value::String(x), Value::String(y)) => Ok(Some(x.cmp(y))),
        (Value::Object(_), Value::Object(_)) if is_quantity(a) || is_quantity(b) => {
            Ok(quantity_cmp(&a.value, &b.value))
        }
        _ => Err(Error(format!(
            "cannot compare {} with {}",
            describe(a),
            describe(b)
        ))),
    }
}

pub(crate) fn describe(item: &Item) -> String {
    match item.type_name.as_deref() {
        Some(t) => t.to_owned(),
        None => match &*item.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
        .to_owned(),
    }
}

/// The string form used by `toString()`, `&`, and string functions on non-string primitives.
pub(crate) fn to_text<'v>(item: &'v Item) -> Option<Cow<'v, str>> {
    match &*item.value {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Object(o) if is_quantity(item) => {
            let value = o.get("value")?;
            let unit = quantity_unit(&item.value).unwrap_or("1");
            Some(Cow::Owned(format!("{value} '{unit}'")))
        }
        _ => None,
    }
}

pub(crate) fn to_integer(item: &Item) -> Option<i64> {
    match &*item.value {
        Value::Number(_) => match Num::of(&item.value)? {
            Num::Int(i) => Some(i),
            Num::Dec(_) => None,
        },
        Value::String(s) => {
            let t = s.strip_prefix('+').unwrap_or(s);
            let digits = t.strip_prefix('-').unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        }
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

pub(crate) fn to_decimal(item: &Item) -> Option<Value> {
    match &*item.value {
        Value::Number(n) => Some(Value::Number(n.clone())),
        Value::String(s) => {
            let body = s.strip_prefix(['+', '-']).unwrap_or(s);
            let (whole, frac) = body.split_once('.').unwrap_or((body, "0"));
            let ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            if !(ok(whole) && ok(frac)) {
                return None;
            }
            Number::from_str(s.strip_prefix('+').unwrap_or(s))
                .ok()
                .map(Value::Number)
        }
        Value::Bool(b) => Some(Value::Number(u8::from(*b).into())),
        _ => None,
    }
}

pub(crate) fn to_boolean(item: &Item) -> Option<bool> {
    match &*item.value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
            "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
            _ => None,
        },
        Value::Number(_) => match Num::of(&item.value)? {
            Num::Int(1) => Some(true),
            Num::Int(0) => Some(false),
            Num::Dec(1.0) => Some(true),
            Num::Dec(0.0) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn typed(v: Value, t: &'static str) -> Item<'static> {
        owned(v, t)
    }

    #[test]
    fn numbers_compare_by_value() {
        let one = typed(json!(1), "Integer");
        let one_dec = typed(Value::Number(Number::from_str("1.0").unwrap()), "Decimal");
        assert_eq!(equals(&one, &one_dec), Some(true));
        assert!(json_equals(
            &json!({"a": [1, {"b": 2.0}]}),
            &json!({"a": [1.0, {"b": 2}]})
        ));
        assert!(!json_equals(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }

    #[test]
    fn equivalence_uses_least_precision_and_normalizes_text() {
        let a = typed(Value::Number(Number::from_str("1.23").unwrap()), "Decimal");
        let b = typed(Value::Number(Number::from_str("1.2").unwrap()), "Decimal");
        assert!(equivalent(&a, &b));
        assert!(equivalent(
            &typed(json!("Hello   World"), "String"),
            &typed(json!(" hello world"), "String")
        ));
    }

    #[test]
    fn dates_of_different_precision_are_undecided() {
        let a = typed(json!("2020-01"), "Date");
        let b = typed(json!("2020-01-05"), "Date");
        assert_eq!(equals(&a, &b), None);
        assert_eq!(compare(&a, &b).unwrap(), None);
        let c = typed(json!("2019-12-31"), "date");
        assert_eq!(compare(&c, &b).unwrap(), Some(Ordering::Less));
        assert!(compare(&typed(json!(1), "Integer"), &typed(json!("a"), "String")).is_err());
    }

    #[test]
    fn conversions() {
        assert_eq!(to_integer(&typed(json!("-12"), "String")), Some(-12));
        assert_eq!(to_integer(&typed(json!("1.5"), "String")), None);
        assert_eq!(
            to_decimal(&typed(json!("1.50"), "String"))
                .unwrap()
                .to_string(),
            "1.50"
        );
        assert_eq!(to_decimal(&typed(json!("abc"), "String")), None);
        assert_eq!(to_boolean(&typed(json!("Yes"), "String")), Some(true));
        let q = typed(json!({"value": 5, "unit": "mg", "code": "mg"}), "Quantity");
        assert_eq!(to_text(&q).unwrap(), "5 'mg'");
    }
}
