//! Function invocations.

use std::borrow::Cow;

use serde_json::Value;

use crate::ast::{Func, Node};
use crate::eval::{contains, single, truth, union, Collection, Evaluator, Scope};
use crate::regex::Regex;
use crate::temporal::{self, TemporalKind};
use crate::values::{self, boolean, integer, Num};
use crate::{Error, Item};

/// Stops `repeat()` / `descendants()` on runaway inputs.
const MAX_REPEAT_ITEMS: usize = 100_000;

impl<'a> Evaluator<'a, '_> {
    pub(crate) fn call(
        &self,
        func: Func,
        input: Collection<'a>,
        args: &[Node],
        scope: Scope<'_, 'a>,
    ) -> Result<Collection<'a>, Error> {
        use Func::*;
        let name = func.name();
        Ok(match func {
            Empty => vec![boolean(input.is_empty())],
            Exists => match args.first() {
                None => vec![boolean(!input.is_empty())],
                Some(criteria) => {
                    let mut found = false;
                    for (i, item) in input.iter().enumerate() {
                        if self.test(criteria, item, i, scope, name)? {
                            found = true;
                            break;
                        }
                    }
                    vec![boolean(found)]
                }
            },
            All => {
                let mut all = true;
                for (i, item) in input.iter().enumerate() {
                    if !self.test(&args[0], item, i, scope, name)? {
                        all = false;
                        break;
                    }
                }
                vec![boolean(all)]
            }
            AllTrue | AnyTrue | AllFalse | AnyFalse => {
                let mut bools = Vec::with_capacity(input.len());
                for item in &input {
                    match item.value.as_bool() {
                        Some(b) => bools.push(b),
                        None => return Err(Error(format!("{name}() expects booleans"))),
                    }
                }
                vec![boolean(match func {
                    AllTrue => bools.iter().all(|b| *b),
                    AnyTrue => bools.iter().any(|b| *b),
                    AllFalse => bools.iter().all(|b| !*b),
                    _ => bools.iter().any(|b| !*b),
                })]
            }
            SubsetOf => {
                let other = self.eval(&args[0], scope)?;
                vec![boolean(input.iter().all(|i| contains(&other, i)))]
            }
            SupersetOf => {
                let other = self.eval(&args[0], scope)?;
                vec![boolean(other.iter().all(|i| contains(&input, i)))]
            }
            Count => vec![integer(i64::try_from(input.len()).unwrap_or(i64::MAX))],
            Distinct => union(input, Vec::new()),
            IsDistinct => {
                let n = input.len();
                vec![boolean(union(input, Vec::new()).len() == n)]
            }
            Where => {
                let mut out = Vec::new();
                for (i, item) in input.iter().enumerate() {
                    if self.test(&args[0], item, i, scope, name)? {
                        out.push(item.clone());
                    }
                }
                out
            }
            Select => {
                let mut out = Vec::new();
                for (i, item) in input.iter().enumerate() {
                    out.extend(self.eval(&args[0], lambda_scope(item, i, scope))?);
                }
                out
            }
            Repeat => {
                let mut out: Collection<'a> = Vec::new();
                let mut frontier = input;
                while !frontier.is_empty() {
                    let mut next = Vec::new();
                    for (i, item) in frontier.iter().enumerate() {
                        for child in self.eval(&args[0], lambda_scope(item, i, scope))? {
                            if !contains(&out, &child) {
                                out.push(child.clone());
                                next.push(child);
                            }
                        }
                    }
                    if out.len() > MAX_REPEAT_ITEMS {
                        return Err(Error("repeat() produced too many items".into()));
                    }
                    frontier = next;
                }
                out
            }
            OfType | As => {
                let spec = type_arg(args)?;
                input
                    .into_iter()
                    .filter(|item| self.is_type_spec(item, spec))
                    .collect()
            }
            Is => {
                let spec = type_arg(args)?;
                match single(&input, "is()")? {
                    None => Vec::new(),
                    Some(item) => vec![boolean(self.is_type_spec(item, spec))],
                }
            }
            Single => match input.len() {
                0 | 1 => input,
                n => return Err(Error(format!("single() called on {n} items"))),
            },
            First => input.into_iter().take(1).collect(),
            Last => input.into_iter().last().into_iter().collect(),
            Tail => input.into_iter().skip(1).collect(),
            Skip | Take => {
                let n = self.int_arg(args, scope, name)?.unwrap_or(0);
                let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
                if func == Skip {
                    input.into_iter().skip(n).collect()
                } else {
                    input.into_iter().take(n).collect()
                }
            }
            Intersect => {
                let other = self.eval(&args[0], scope)?;
                let mut out: Collection<'a> = Vec::new();
                for item in input {
                    if contains(&other, &item) && !contains(&out, &item) {
                        out.push(item);
                    }
                }
                out
            }
            Exclude => {
                let other = self.eval(&args[0], scope)?;
                input
                    .into_iter()
                    .filter(|item| !contains(&other, item))
                    .collect()
            }
            Union => union(input, self.eval(&args[0], scope)?),
            Combine => {
                let mut out = input;
                out.extend(self.eval(&args[0], scope)?);
                out
            }
            Iif => {
                let inner = Scope {
                    this: &input,
                    index: None,
                    total: scope.total,
                };
                let criterion = self.eval(&args[0], inner)?;
                if truth(&criterion, "iif()")? == Some(true) {
                    self.eval(&args[1], inner)?
                } else if let Some(otherwise) = args.get(2) {
                    self.eval(otherwise, inner)?
                } else {
                    Vec::new()
                }
            }
            ToBoolean | ConvertsToBoolean => {
                convert(&input, func == ConvertsToBoolean, name, |i| {
                    values::to_boolean(i).map(boolean)
                })?
            }
            ToInteger | ConvertsToInteger => {
                convert(&input, func == ConvertsToInteger, name, |i| {
                    values::to_integer(i).map(integer)
                })?
            }
            ToDecimal | ConvertsToDecimal => {
                convert(&input, func == ConvertsToDecimal, name, |i| {
                    values::to_decimal(i).map(|v| values::owned(v, "Decimal"))
                })?
            }
            ToStringFn | ConvertsToString => {
                convert(&input, func == ConvertsToString, name, |i| {
                    values::to_text(i).map(|s| values::string(s.into_owned()))
                })?
            }
            ToDate | ToDateTime => convert(&input, false, name, |i| {
                let t = temporal::Temporal::parse(i.value.as_str()?)?;
                match (func, t.kind) {
                    (_, TemporalKind::Time) => None,
                    (ToDate, _) => {
                        let mut d = t;
                        d.kind = TemporalKind::Date;
                        d.precision = d.precision.min(3);
                        d.tz = None;
                        Some(values::owned(Value::String(d.format()), "Date"))
                    }
                    _ => {
                        let mut d = t;
                        d.kind = TemporalKind::DateTime;
                        Some(values::owned(Value::String(d.format()), "DateTime"))
                    }
                }
            })?,
            IndexOf => {
                let Some(s) = string_input(&input, name)? else {
                    return Ok(Vec::new());
                };
                let Some(needle) = self.str_arg(&args[0], scope, name)? else {
                    return Ok(Vec::new());
                };
                let index = s.find(needle.as_ref()).map_or(-1, |b| char_count(&s[..b]));
                vec![integer(index)]
            }
            Substring => {
                let Some(s) = string_input(&input, name)? else {
                    return Ok(Vec::new());
                };
                let Some(start) = self.int_arg(args, scope, name)? else {
                    return Ok(Vec::new());
                };
                let length = match args.get(1) {
                    Some(arg) => {
                        let v = self.eval(arg, scope)?;
                        match self.singleton_integer(&v, "substring()")? {
                            Some(l) => Some(l),
                            None => return Ok(Vec::new()),
                        }
                    }
                    None => None,
                };
                let len = char_count(&s);
                if start < 0 || start >= len {
                    return Ok(Vec::new());
                }
                let take = length.unwrap_or(len).max(0);
                let start = usize::try_from(start).unwrap_or(0);
                let take = usize::try_from(take).unwrap_or(usize::MAX);
                vec![values::string(s.chars().skip(start).take(take).collect())]
            }
            StartsWith | EndsWith | ContainsStr => {
                let Some(s) = string_input(&input, name)? else {
                    return Ok(Vec::new());
                };
                let Some(arg) = self.str_arg(&args[0], scope, name)? else {
                    return Ok(Vec::new());
                };
                vec![boolean(match func {
                    StartsWith => s.starts_with(arg.as_ref()),
                    EndsWith => s.ends_with(arg.as_ref()),
                    _ => s.contains(arg.as_ref()),
                })]
            }
            Upper | Lower | Trim | Length | ToChars => {
                let Some(s) = string_input(&input, name)? else {
                    return Ok(Vec::new());
                };
                match func {
                    Upper => vec![values::string(s.to_uppercase())],
                    Lower => vec![values::string(s.to_lowercase())],
                    Trim => vec![values::string(s.trim().to_owned())],
                    Length => vec![integer(char_count(&s))],
                    _ => s.chars().map(|c| values::string(c.to_string())).collect(),
                }
            }
            Replace => {
                let Some(s) = string_input(&input, name)? else {
                    return Ok(Vec::new());
                };
                let (Some(pattern), Some(with)) = (
                    self.str_arg(&args[0], scope, name)?,
                    self.str_arg(&args[1], scope, name)?,
                ) else {
                    return Ok(Vec::new());
                };
                let replaced = if pattern.is_empty() {
                    // Spec: an empty pattern surrounds every character with the substitution.
                    let mut out = with.to_string();
                    for c in s.chars() {
                        out.push(c);
                        out.push_str(&with);
                    }
                    out
                } else {
                    s.replace(pattern.as_ref(), &with)
                };
                vec![values::string(replaced)]
            }
            Matches | ReplaceMatches => {
                let Some(s) = string_input(&input, name)? else {
                    return Ok(Vec::new());
                };
                let Some(pattern) = self.str_arg(&args[0], scope, name)? else {
                    return Ok(Vec::new());
                };
                let re = Regex::new(&pattern)?;
                if func == Matches {
                    vec![boolean(re.is_match(&s)?)]
                } else {
                    let Some(with) = self.str_arg(&args[1], scope, name)? else {
                        return Ok(Vec::new());
                    };
                    vec![values::string(re.replace_all(&s, &with)?)]
                }
            }
            Split => {
                let Some(s) = string_input(&input, name)? else {
                    return Ok(Vec::new());
                };
                let Some(sep) = self.str_arg(&args[0], scope, name)? else {
                    return Ok(Vec::new());
                };
                if sep.is_empty() {
                    s.chars().map(|c| values::string(c.to_string())).collect()
                } else {
                    s.split(sep.as_ref())
                        .map(|p| values::string(p.to_owned()))
                        .collect()
                }
            }
            Join => {
                let sep = match args.first() {
                    Some(arg) => self.str_arg(arg, scope, name)?.unwrap_or_default(),
                    None => Cow::Borrowed(""),
                };
                let mut parts = Vec::with_capacity(input.len());
                for item in &input {
                    match values::to_text(item) {
                        Some(t) => parts.push(t.into_owned()),
                        None => return Err(Error("join() expects strings".into())),
                    }
                }
                vec![values::string(parts.join(&sep))]
            }
            Abs | Ceiling | Floor | Truncate | Sqrt | Exp | Ln | Round | Log | Power => {
                let Some(item) = single(&input, name)? else {
                    return Ok(Vec::new());
                };
                let Some(x) = Num::of(&item.value) else {
                    return Err(Error(format!("{name}() expects a number")));
                };
                self.math(func, x, args, scope)?.into_iter().collect()
            }
            Children => {
                let mut out = Vec::new();
                for item in &input {
                    self.children(item, &mut out);
                }
                out
            }
            Descendants => {
                let mut out = Vec::new();
                let mut frontier = input;
                while !frontier.is_empty() {
                    let mut next = Vec::new();
                    for item in &frontier {
                        self.children(item, &mut next);
                    }
                    out.extend(next.iter().cloned());
                    if out.len() > MAX_REPEAT_ITEMS {
                        return Err(Error("descendants() produced too many items".into()));
                    }
                    frontier = next;
                }
                out
            }
            Trace => input,
            Now => vec![values::owned(
                Value::String(temporal::now().format()),
                "DateTime",
            )],
            Today => {
                let mut t = temporal::now();
                t.kind = TemporalKind::Date;
                t.precision = 3;
                t.tz = None;
                vec![values::owned(Value::String(t.format()), "Date")]
            }
            TimeOfDay => {
                let mut t = temporal::now();
                t.kind = TemporalKind::Time;
                t.tz = None;
                vec![values::owned(Value::String(t.format()), "Time")]
            }
            Not => match truth(&input, "not()")? {
                None => Vec::new(),
                Some(b) => vec![boolean(!b)],
            },
            HasValue => vec![boolean(matches!(
                input.as_slice(),
                [item] if !matches!(*item.value, Value::Object(_) | Value::Array(_) | Value::Null)
            ))],
            Resolve => {
                let mut out = Vec::new();
                for item in &input {
                    self.resolve(item, &mut out);
                }
                out
            }
            Extension => {
                let Some(url) = self.str_arg(&args[0], scope, name)? else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                for item in &input {
                    let mut exts = Vec::new();
                    self.navigate(item, "extension", &mut exts);
                    out.extend(exts.into_iter().filter_map(|mut e| {
                        let matches = e.value.get("url").and_then(Value::as_str) == Some(&url);
                        e.type_name = Some(Cow::Borrowed("Extension"));
                        matches.then_some(e)
                    }));
                }
                out
            }
            Aggregate => {
                let mut total = match args.get(1) {
                    Some(init) => self.eval(init, scope)?,
                    None => Vec::new(),
                };
                for (i, item) in input.iter().enumerate() {
                    let inner = Scope {
                        this: std::slice::from_ref(item),
                        index: Some(i),
                        total: Some(&total),
                    };
                    total = self.eval(&args[0], inner)?;
                }
                total
            }
            HtmlChecks => vec![boolean(true)],
        })
    }

    /// Evaluates a criteria argument for one item, as a boolean (empty counts as false).
    fn test(
        &self,
        criteria: &Node,
        item: &Item<'a>,
        index: usize,
        scope: Scope<'_, 'a>,
        name: &str,
    ) -> Result<bool, Error> {
        let result = self.eval(criteria, lambda_scope(item, index, scope))?;
        Ok(truth(&result, name)? == Some(true))
    }

    fn int_arg(
        &self,
        args: &[Node],
        scope: Scope<'_, 'a>,
        name: &str,
    ) -> Result<Option<i64>, Error> {
        let v = self.eval(&args[0], scope)?;
        self.singleton_integer(&v, &format!("{name}()"))
    }

    /// A string argument; `None` when it evaluates to empty.
    fn str_arg(
        &self,
        arg: &Node,
        scope: Scope<'_, 'a>,
        name: &str,
    ) -> Result<Option<Cow<'static, str>>, Error> {
        let v = self.eval(arg, scope)?;
        match single(&v, name)? {
            None => Ok(None),
            Some(item) => match values::to_text(item) {
                Some(s) => Ok(Some(Cow::Owned(s.into_owned()))),
                None => Err(Error(format!("{name}() expects a string argument"))),
            },
        }
    }

    fn math(
        &self,
        func: Func,
        x: Num,
        args: &[Node],
        scope: Scope<'_, 'a>,
    ) -> Result<Option<Item<'a>>, Error> {
        use Func::*;
        let f = x.as_f64();
        let to_int = |v: f64| {
            if v.is_finite() && v.abs() < 9.2e18 {
                Some(integer(v as i64))
            } else {
                None
            }
        };
        Ok(match func {
            Abs => match x {
                Num::Int(i) => i.checked_abs().map(integer),
                Num::Dec(d) => values::decimal(d.abs()),
            },
            Ceiling => to_int(f.ceil()),
            Floor => to_int(f.floor()),
            Truncate => to_int(f.trunc()),
            Sqrt if f < 0.0 => None,
            Sqrt => values::decimal(f.sqrt()),
            Exp => values::decimal(f.exp()),
            Ln if f <= 0.0 => None,
            Ln => values::decimal(f.ln()),
            Round => {
                let places = match args.first() {
                    Some(_) => self.int_arg(args, scope, "round")?.unwrap_or(0),
                    None => 0,
                };
                if places < 0 {
                    return Err(Error("round() precision must be >= 0".into()));
                }
                let scale = 10f64.powi(i32::try_from(places.min(15)).unwrap_or(15));
                // FHIRPath rounds half away from zero, as f64::round does.
                values::decimal((f * scale).round() / scale)
            }
            Log | Power => {
                let v = self.eval(&args[0], scope)?;
                let Some(arg) = single(&v, func.name())? else {
                    return Ok(None);
                };
                let Some(y) = Num::of(&arg.value) else {
                    return Err(Error(format!("{}() expects a number", func.name())));
                };
                if func == Log {
                    let r = f.ln() / y.as_f64().ln();
                    if r.is_finite() {
                        values::decimal(r)
                    } else {
                        None
                    }
                } else {
                    match (x, y) {
                        (Num::Int(b), Num::Int(e)) if e >= 0 => u32::try_from(e)
                            .ok()
                            .and_then(|e| b.checked_pow(e))
                            .map(integer),
                        _ => values::decimal(f.powf(y.as_f64())),
                    }
                }
            }
            _ => None,
        })
    }

    /// `resolve()` without a server: references resolve to themselves, typed by their target
    /// (the type name borrows from the reference text when the item is borrowed).
    fn resolve(&self, item: &Item<'a>, out: &mut Collection<'a>) {
        let type_name = match &item.value {
            Cow::Borrowed(v) => match self.target(v) {
                Target::Local(found) => return out.push(found),
                Target::Typed(t) => t.map(Cow::Borrowed),
                Target::Nothing => return,
            },
            Cow::Owned(v) => match self.target(v) {
                Target::Local(found) => return out.push(found),
                Target::Typed(t) => t.map(|t| Cow::Owned(t.to_owned())),
                Target::Nothing => return,
            },
        };
        out.push(Item {
            value: item.value.clone(),
            type_name,
        });
    }

    fn target<'v>(&self, v: &'v Value) -> Target<'v, 'a> {
        match v {
            Value::Object(obj) => {
                let reference = obj.get("reference").and_then(Value::as_str);
                if let Some(r) = reference {
                    if let Some(found) = self.local_resource(r) {
                        return Target::Local(found);
                    }
                    if let Some(ty) = self.reference_type(r) {
                        return Target::Typed(Some(ty));
                    }
                }
                // A logical reference may still state its target type.
                let ty = obj
                    .get("type")
                    .and_then(Value::as_str)
                    .filter(|t| self.is_resource_type(t));
                if ty.is_some() || reference.is_some() {
                    Target::Typed(ty)
                } else {
                    Target::Nothing
                }
            }
            Value::String(s) => Target::Typed(self.reference_type(s)),
            _ => Target::Nothing,
        }
    }

    /// A contained resource (`#id`) or a Bundle entry with that `fullUrl`.
    fn local_resource(&self, reference: &str) -> Option<Item<'a>> {
        let Cow::Borrowed(root) = self.resource.value else {
            return None;
        };
        if let Some(id) = reference.strip_prefix('#') {
            let contained = root.get("contained")?.as_array()?;
            return contained
                .iter()
                .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
                .map(Item::resource);
        }
        if root.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            let entries = root.get("entry")?.as_array()?;
            return entries
                .iter()
                .find(|e| e.get("fullUrl").and_then(Value::as_str) == Some(reference))
                .and_then(|e| e.get("resource"))
                .map(Item::resource);
        }
        None
    }

    /// The resource type named in a reference or canonical URL (`Patient/1`,
    /// `http://x/fhir/Patient/1/_history/2`, `http://x/ValueSet/vs|1.0`).
    fn reference_type<'r>(&self, reference: &'r str) -> Option<&'r str> {
        let r = reference.split(['|', '#', '?']).next()?;
        let mut segments: Vec<&str> = r.split('/').collect();
        if let Some(h) = segments.iter().position(|s| *s == "_history") {
            segments.truncate(h);
        }
        match segments.as_slice() {
            [.., ty, id] if !id.is_empty() && self.is_resource_type(ty) => Some(ty),
            _ => None,
        }
    }
}

/// What a reference points at.
enum Target<'v, 'a> {
    /// A resource inside the current one (contained, or a Bundle entry).
    Local(Item<'a>),
    /// The reference itself, with the target type when it can be told.
    Typed(Option<&'v str>),
    /// Not a reference.
    Nothing,
}

fn lambda_scope<'s, 'a>(item: &'s Item<'a>, index: usize, outer: Scope<'s, 'a>) -> Scope<'s, 'a> {
    Scope {
        this: std::slice::from_ref(item),
        index: Some(index),
        total: outer.total,
    }
}

fn type_arg(args: &[Node]) -> Result<&crate::ast::TypeSpec, Error> {
    match args.first() {
        Some(Node::Type(spec)) => Ok(spec),
        _ => Err(Error("expected a type name argument".into())),
    }
}

/// The single string input of a string function; `None` for empty input.
fn string_input<'c>(input: &'c [Item], name: &str) -> Result<Option<Cow<'c, str>>, Error> {
    match single(input, name)? {
        None => Ok(None),
        Some(item) => match values::to_text(item) {
            Some(s) => Ok(Some(s)),
            None => Err(Error(format!(
                "{name}() expects a string, got {}",
                values::describe(item)
            ))),
        },
    }
}

/// Shared body of `toX()` / `convertsToX()`.
fn convert<'a>(
    input: &[Item<'a>],
    test_only: bool,
    name: &str,
    f: impl Fn(&Item<'a>) -> Option<Item<'static>>,
) -> Result<Collection<'a>, Error> {
    let Some(item) = single(input, name)? else {
        return Ok(Vec::new());
    };
    let converted = f(item);
    Ok(if test_only {
        vec![boolean(converted.is_some())]
    } else {
        converted.into_iter().collect()
    })
}

fn char_count(s: &str) -> i64 {
    i64::try_from(s.chars().count()).unwrap_or(i64::MAX)
}
