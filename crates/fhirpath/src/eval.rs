//! The tree-walking evaluator: navigation, operators, type tests.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use crate::ast::{BinOp, Node, TypeSpec};
use crate::temporal::Temporal;
use crate::types::{builtin_base, eq_ignoring_first_case, intern, known_suffix_type, system_type};
use crate::values::{self, boolean, integer, Num};
use crate::{ElementInfo, Error, Item, ModelInfo};

pub(crate) type Collection<'a> = Vec<Item<'a>>;

/// Bounds base-type chains in case a model reports a cycle.
const MAX_TYPE_DEPTH: usize = 16;

/// State fixed for one evaluation.
pub(crate) struct Evaluator<'a, 'm> {
    pub model: &'m dyn ModelInfo,
    pub resource: Item<'a>,
    pub context: Item<'a>,
    /// Whether the model knows resource types at all; if not, capitalised path segments of
    /// references are trusted to be resource types.
    model_knows_resources: bool,
}

/// The variables of the innermost iteration (`$this`, `$index`, `$total`).
#[derive(Clone, Copy)]
pub(crate) struct Scope<'s, 'a> {
    pub this: &'s [Item<'a>],
    pub index: Option<usize>,
    pub total: Option<&'s [Item<'a>]>,
}

impl<'a, 'm> Evaluator<'a, 'm> {
    pub fn new(model: &'m dyn ModelInfo, resource: &'a Value, context: Item<'a>) -> Self {
        Evaluator {
            model,
            resource: Item::resource(resource),
            context,
            model_knows_resources: model.is_resource_type("Patient"),
        }
    }

    pub fn eval(&self, node: &Node, scope: Scope<'_, 'a>) -> Result<Collection<'a>, Error> {
        Ok(match node {
            Node::Empty => Vec::new(),
            Node::Literal(v, ty) => vec![values::owned(v.clone(), ty)],
            Node::Member(None, name) => self.member(scope.this, name),
            Node::Member(Some(target), name) => {
                let input = self.eval(target, scope)?;
                self.member(&input, name)
            }
            Node::Call(target, func, args) => {
                let input = match target {
                    Some(t) => self.eval(t, scope)?,
                    None => scope.this.to_vec(),
                };
                self.call(*func, input, args, scope)?
            }
            Node::Type(spec) => {
                return Err(Error(format!("type name '{}' used as a value", spec.name)))
            }
            Node::This => scope.this.to_vec(),
            Node::Index => scope
                .index
                .map(|i| integer(i64::try_from(i).unwrap_or(i64::MAX)))
                .into_iter()
                .collect(),
            Node::Total => scope.total.map(<[Item]>::to_vec).unwrap_or_default(),
            Node::External(name) => self.external(name)?,
            Node::Indexer(target, index) => {
                let index = self.eval(index, scope)?;
                let Some(i) = self.singleton_integer(&index, "indexer")? else {
                    return Ok(Vec::new());
                };
                let mut input = self.eval(target, scope)?;
                match usize::try_from(i) {
                    Ok(i) if i < input.len() => vec![input.swap_remove(i)],
                    _ => Vec::new(),
                }
            }
            Node::Neg(operand) => {
                let input = self.eval(operand, scope)?;
                match single(&input, "unary '-'")? {
                    None => Vec::new(),
                    Some(item) => match Num::of(&item.value) {
                        Some(Num::Int(i)) => i.checked_neg().map(integer).into_iter().collect(),
                        Some(Num::Dec(f)) => values::decimal(-f).into_iter().collect(),
                        None => return Err(Error("unary '-' needs a number".into())),
                    },
                }
            }
            Node::Binary(op, lhs, rhs) => self.binary(*op, lhs, rhs, scope)?,
            Node::Is(operand, spec) => {
                let input = self.eval(operand, scope)?;
                match single(&input, "'is'")? {
                    None => Vec::new(),
                    Some(item) => vec![boolean(self.is_type_spec(item, spec))],
                }
            }
            Node::As(operand, spec) => {
                let input = self.eval(operand, scope)?;
                input
                    .into_iter()
                    .filter(|item| self.is_type_spec(item, spec))
                    .collect()
            }
        })
    }

    fn member(&self, input: &[Item<'a>], name: &str) -> Collection<'a> {
        let mut out = Vec::with_capacity(input.len());
        // FHIR element names start in lower case, so a capitalised name is a type name: a
        // leading `Patient` in `Patient.name` (or `entry.resource.Patient`) selects the
        // items of that type.
        let type_like = name.starts_with(|c: char| c.is_ascii_uppercase());
        for item in input {
            if type_like && self.is_type(item, None, name) {
                out.push(item.clone());
            } else {
                self.navigate(item, name, &mut out);
            }
        }
        out
    }

    fn external(&self, name: &str) -> Result<Collection<'a>, Error> {
        let text = |s: &str| Ok(vec![values::string(s.to_owned())]);
        match name {
            "resource" | "rootResource" => Ok(vec![self.resource.clone()]),
            "context" => Ok(vec![self.context.clone()]),
            "ucum" => text(crate::UCUM),
            "sct" => text("http://snomed.info/sct"),
            "loinc" => text("http://loinc.org"),
            _ => {
                if let Some(vs) = name.strip_prefix("vs-") {
                    text(&format!("http://hl7.org/fhir/ValueSet/{vs}"))
                } else if let Some(ext) = name.strip_prefix("ext-") {
                    text(&format!("http://hl7.org/fhir/StructureDefinition/{ext}"))
                } else {
                    Err(Error(format!("unknown external constant '%{name}'")))
                }
            }
        }
    }

    pub fn singleton_integer(&self, input: &[Item<'a>], what: &str) -> Result<Option<i64>, Error> {
        match single(input, what)? {
            None => Ok(None),
            Some(item) => match Num::of(&item.value) {
                Some(Num::Int(i)) => Ok(Some(i)),
                _ => Err(Error(format!("{what} expects an integer"))),
            },
        }
    }

    // ----- navigation -----

    /// Appends the children named `name` of `item` to `out`.
    pub fn navigate(&self, item: &Item<'a>, name: &str, out: &mut Collection<'a>) {
        let parent = item.type_name.as_deref();
        match &item.value {
            Cow::Borrowed(v) => self.children_named(v, parent, name, out),
            Cow::Owned(v) => {
                // Computed values are rare here; their children must be copied out.
                let mut tmp = Vec::new();
                self.children_named(v, parent, name, &mut tmp);
                out.extend(tmp.into_iter().map(|i| -> Item<'a> { i.into_owned() }));
            }
        }
    }

    fn children_named<'v>(
        &self,
        v: &'v Value,
        parent: Option<&str>,
        name: &str,
        out: &mut Vec<Item<'v>>,
    ) {
        let Value::Object(obj) = v else { return };
        let info = parent.and_then(|p| self.element_info(p, name));
        match info {
            Some(info) if info.is_choice => {
                for (key, value) in obj {
                    let Some(suffix) = choice_suffix(key, name) else {
                        continue;
                    };
                    let declared = info
                        .types
                        .iter()
                        .find(|t| eq_ignoring_first_case(t, suffix));
                    let ty = match declared {
                        Some(t) if t == suffix => Cow::Borrowed(suffix),
                        Some(t) => type_cow(t),
                        None => match known_suffix_type(suffix) {
                            Some(t) => Cow::Borrowed(t),
                            None => continue,
                        },
                    };
                    push_values(value, Some(ty), out);
                }
            }
            Some(info) => {
                if let Some(value) = obj.get(name) {
                    let ty = match info.types {
                        [single] => Some(type_cow(single)),
                        _ => None,
                    };
                    push_values(value, ty, out);
                }
            }
            None => {
                if let Some(value) = obj.get(name) {
                    push_values(value, None, out);
                    return;
                }
                // Unknown element: a choice element is still recognisable by its suffix.
                for (key, value) in obj {
                    if let Some(ty) = choice_suffix(key, name).and_then(known_suffix_type) {
                        push_values(value, Some(Cow::Borrowed(ty)), out);
                    }
                }
            }
        }
    }

    /// Element lookup that also tries base types (a model may not repeat inherited elements).
    pub fn element_info(&self, type_name: &str, element: &str) -> Option<ElementInfo<'m>> {
        let mut ty = type_name;
        for _ in 0..MAX_TYPE_DEPTH {
            if let Some(info) = self.model.element(ty, element) {
                return Some(info);
            }
            ty = self.model.base_type(ty)?;
        }
        None
    }

    /// All child values of `item` (for `children()`), typed where the model allows.
    pub fn children(&self, item: &Item<'a>, out: &mut Collection<'a>) {
        match &item.value {
            Cow::Borrowed(v) => self.all_children(v, item.type_name.as_deref(), out),
            Cow::Owned(v) => {
                let mut tmp = Vec::new();
                self.all_children(v, item.type_name.as_deref(), &mut tmp);
                out.extend(tmp.into_iter().map(|i| -> Item<'a> { i.into_owned() }));
            }
        }
    }

    fn all_children<'v>(&self, v: &'v Value, parent: Option<&str>, out: &mut Vec<Item<'v>>) {
        let Value::Object(obj) = v else { return };
        for (key, value) in obj {
            if key == "resourceType" || key.starts_with('_') {
                continue;
            }
            let ty = parent.and_then(|p| match self.element_info(p, key) {
                Some(ElementInfo {
                    types: [single],
                    is_choice: false,
                    ..
                }) => Some(type_cow(single)),
                Some(_) => None,
                None => {
                    // `valueQuantity`: find the split where a known type suffix starts.
                    let split = key.char_indices().find(|(i, c)| {
                        *i > 0 && c.is_ascii_uppercase() && known_suffix_type(&key[*i..]).is_some()
                    })?;
                    known_suffix_type(&key[split.0..]).map(Cow::Borrowed)
                }
            });
            push_values(value, ty, out);
        }
    }

    // ----- types -----

    pub fn is_type_spec(&self, item: &Item, spec: &TypeSpec) -> bool {
        self.is_type(item, spec.namespace.as_deref(), &spec.name)
    }

    /// Whether `item` is of type `want` or a subtype of it.
    pub fn is_type(&self, item: &Item, namespace: Option<&str>, want: &str) -> bool {
        if item.type_name.is_none() && untyped_primitive_is(&item.value, want) {
            return true;
        }
        let Some(actual) = item
            .type_name
            .as_deref()
            .or_else(|| inferred_type(&item.value))
        else {
            return false;
        };
        if namespace == Some("System") {
            return system_type(actual) == Some(want);
        }
        let mut ty = actual;
        for _ in 0..MAX_TYPE_DEPTH {
            if ty == want {
                return true;
            }
            // Primitives and their System counterparts (`string`/`String`, `code`/`String`).
            if system_type(ty).is_some() && system_type(want).is_some() {
                if eq_ignoring_first_case(ty, want) {
                    return true;
                }
                if namespace.is_none() && ty.starts_with(|c: char| c.is_ascii_lowercase()) {
                    let system = [
                        "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time",
                    ];
                    if system.contains(&want) && system_type(ty) == Some(want) {
                        return true;
                    }
                }
            }
            match self.model.base_type(ty).or_else(|| builtin_base(ty)) {
                Some(base) => ty = base,
                None => return false,
            }
        }
        false
    }

    pub fn is_resource_type(&self, name: &str) -> bool {
        self.model.is_resource_type(name)
            || (!self.model_knows_resources
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric())
                && intern(name).is_none())
    }

    // ----- operators -----

    fn binary(
        &self,
        op: BinOp,
        lhs: &Node,
        rhs: &Node,
        scope: Scope<'_, 'a>,
    ) -> Result<Collection<'a>, Error> {
        use BinOp::*;
        match op {
            And | Or | Implies => {
                let left = self.eval(lhs, scope)?;
                let l = truth(&left, op_name(op))?;
                // Short-circuit where the right side cannot change the result.
                match (op, l) {
                    (And, Some(false)) => return Ok(vec![boolean(false)]),
                    (Or, Some(true)) => return Ok(vec![boolean(true)]),
                    (Implies, Some(false)) => return Ok(vec![boolean(true)]),
                    _ => {}
                }
                let right = self.eval(rhs, scope)?;
                let r = truth(&right, op_name(op))?;
                let result = match op {
                    And => match (l, r) {
                        (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    },
                    Or => match (l, r) {
                        (_, Some(true)) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    },
                    _ => match (l, r) {
                        (_, Some(true)) => Some(true),
                        (Some(true), r) => r,
                        _ => None,
                    },
                };
                return Ok(result.map(boolean).into_iter().collect());
            }
            _ => {}
        }
        let left = self.eval(lhs, scope)?;
        let right = self.eval(rhs, scope)?;
        Ok(match op {
            Union => union(left, right),
            Xor => match (truth(&left, "xor")?, truth(&right, "xor")?) {
                (Some(a), Some(b)) => vec![boolean(a != b)],
                _ => Vec::new(),
            },
            Eq | Ne => {
                if left.is_empty() || right.is_empty() {
                    return Ok(Vec::new());
                }
                let eq = collections_equal(&left, &right);
                eq.map(|e| boolean(e == (op == Eq))).into_iter().collect()
            }
            Equiv | NotEquiv => {
                let eq = collections_equivalent(&left, &right);
                vec![boolean(eq == (op == Equiv))]
            }
            Lt | Le | Gt | Ge => {
                let (Some(a), Some(b)) =
                    (single(&left, op_name(op))?, single(&right, op_name(op))?)
                else {
                    return Ok(Vec::new());
                };
                let Some(ord) = values::compare(a, b)? else {
                    return Ok(Vec::new());
                };
                let result = match op {
                    Lt => ord == Ordering::Less,
                    Le => ord != Ordering::Greater,
                    Gt => ord == Ordering::Greater,
                    _ => ord != Ordering::Less,
                };
                vec![boolean(result)]
            }
            In | Contains => {
                let (needle, haystack) = if op == In {
                    (left, right)
                } else {
                    (right, left)
                };
                match single(&needle, op_name(op))? {
                    None => Vec::new(),
                    Some(n) => vec![boolean(contains(&haystack, n))],
                }
            }
            Concat => {
                let text = |c: &[Item]| -> Result<String, Error> {
                    Ok(single(c, "'&'")?
                        .and_then(values::to_text)
                        .map(Cow::into_owned)
                        .unwrap_or_default())
                };
                vec![values::string(text(&left)? + &text(&right)?)]
            }
            Add | Sub | Mul | Div | IntDiv | Mod => {
                let (Some(a), Some(b)) =
                    (single(&left, op_name(op))?, single(&right, op_name(op))?)
                else {
                    return Ok(Vec::new());
                };
                arithmetic(op, a, b)?.into_iter().collect()
            }
            And | Or | Implies => unreachable_ops(),
        })
    }
}

/// `And`/`Or`/`Implies` return early above; this keeps the match exhaustive without panicking.
fn unreachable_ops<'a>() -> Collection<'a> {
    Vec::new()
}

fn op_name(op: BinOp) -> &'static str {
    use BinOp::*;
    match op {
        Mul => "'*'",
        Div => "'/'",
        IntDiv => "'div'",
        Mod => "'mod'",
        Add => "'+'",
        Sub => "'-'",
        Concat => "'&'",
        Union => "'|'",
        Lt => "'<'",
        Le => "'<='",
        Gt => "'>'",
        Ge => "'>='",
        Eq => "'='",
        Ne => "'!='",
        Equiv => "'~'",
        NotEquiv => "'!~'",
        In => "'in'",
        Contains => "'contains'",
        And => "'and'",
        Or => "'or'",
        Xor => "'xor'",
        Implies => "'implies'",
    }
}

fn arithmetic<'a>(op: BinOp, a: &Item, b: &Item) -> Result<Option<Item<'a>>, Error> {
    use BinOp::*;
    if let (Some(x), Some(y)) = (Num::of(&a.value), Num::of(&b.value)) {
        return Ok(match (op, x, y) {
            (Add, Num::Int(p), Num::Int(q)) => p.checked_add(q).map(integer),
            (Sub, Num::Int(p), Num::Int(q)) => p.checked_sub(q).map(integer),
            (Mul, Num::Int(p), Num::Int(q)) => p.checked_mul(q).map(integer),
            (IntDiv, Num::Int(p), Num::Int(q)) => p.checked_div(q).map(integer),
            (Mod, Num::Int(p), Num::Int(q)) => p.checked_rem(q).map(integer),
            (Add, ..) => values::decimal(x.as_f64() + y.as_f64()),
            (Sub, ..) => values::decimal(x.as_f64() - y.as_f64()),
            (Mul, ..) => values::decimal(x.as_f64() * y.as_f64()),
            (Div, ..) if y.as_f64() == 0.0 => None,
            (Div, ..) => values::decimal(x.as_f64() / y.as_f64()),
            (IntDiv, ..) if y.as_f64() == 0.0 => None,
            (IntDiv, ..) => Some(integer((x.as_f64() / y.as_f64()).trunc() as i64)),
            (Mod, ..) if y.as_f64() == 0.0 => None,
            (Mod, ..) => values::decimal(x.as_f64() % y.as_f64()),
            _ => None,
        });
    }
    match (op, &*a.value, &*b.value) {
        (Add, Value::String(x), Value::String(y)) => {
            return Ok(Some(values::string(format!("{x}{y}"))))
        }
        (Add | Sub, Value::String(date), Value::Object(q)) => {
            if let Some(t) = Temporal::parse(date) {
                let amount = match q.get("value").and_then(Num::of) {
                    Some(Num::Int(i)) => i,
                    Some(Num::Dec(f)) if f.fract() == 0.0 => f as i64,
                    _ => return Err(Error("date arithmetic needs a whole quantity".into())),
                };
                let unit = q
                    .get("code")
                    .or_else(|| q.get("unit"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let amount = if op == Sub { -amount } else { amount };
                let ty = a
                    .type_name
                    .as_deref()
                    .and_then(intern)
                    .unwrap_or("DateTime");
                return Ok(t
                    .add(amount, unit)
                    .map(|r| values::owned(Value::String(r.format()), ty)));
            }
        }
        _ => {}
    }
    Err(Error(format!(
        "cannot apply {} to {} and {}",
        op_name(op),
        values::describe(a),
        values::describe(b)
    )))
}

/// Three-valued truth of a collection: empty is unknown, a single boolean is itself, any
/// other single item is true (FHIRPath singleton evaluation).
pub(crate) fn truth(c: &[Item], what: &str) -> Result<Option<bool>, Error> {
    match c {
        [] => Ok(None),
        [item] => Ok(Some(item.value.as_bool().unwrap_or(true))),
        _ => Err(Error(format!(
            "{what} expects a single boolean, got {} items",
            c.len()
        ))),
    }
}

/// The only item of a collection, `None` when empty, an error for several.
pub(crate) fn single<'c, 'a>(c: &'c [Item<'a>], what: &str) -> Result<Option<&'c Item<'a>>, Error> {
    match c {
        [] => Ok(None),
        [item] => Ok(Some(item)),
        _ => Err(Error(format!(
            "{what} expects a single item, got {}",
            c.len()
        ))),
    }
}

/// Item equality for de-duplication: same JSON node, or equal values.
pub(crate) fn same_item(a: &Item, b: &Item) -> bool {
    if let (Cow::Borrowed(x), Cow::Borrowed(y)) = (&a.value, &b.value) {
        if std::ptr::eq(*x, *y) {
            return true;
        }
    }
    values::equals(a, b) == Some(true)
}

pub(crate) fn contains(c: &[Item], needle: &Item) -> bool {
    c.iter().any(|i| same_item(i, needle))
}

pub(crate) fn union<'a>(mut left: Collection<'a>, right: Collection<'a>) -> Collection<'a> {
    let mut out: Collection<'a> = Vec::with_capacity(left.len() + right.len());
    for item in left.drain(..).chain(right) {
        if !contains(&out, &item) {
            out.push(item);
        }
    }
    out
}

fn collections_equal(a: &[Item], b: &[Item]) -> Option<bool> {
    if a.len() != b.len() {
        return Some(false);
    }
    let mut all = true;
    for (x, y) in a.iter().zip(b) {
        match values::equals(x, y) {
            Some(true) => {}
            Some(false) => all = false,
            None => return None,
        }
    }
    Some(all)
}

fn collections_equivalent(a: &[Item], b: &[Item]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| b.iter().any(|y| values::equivalent(x, y)))
        && b.iter().all(|y| a.iter().any(|x| values::equivalent(x, y)))
}

/// `valueQuantity` with base `value` → `Quantity`, when the suffix starts upper-case.
fn choice_suffix<'k>(key: &'k str, base: &str) -> Option<&'k str> {
    key.strip_prefix(base)
        .filter(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
}

fn type_cow(name: &str) -> Cow<'static, str> {
    // R4 StructureDefinitions type a few elements (`Resource.id`, `Extension.url`) with
    // FHIRPath System type URLs.
    let name = name
        .strip_prefix("http://hl7.org/fhirpath/System.")
        .unwrap_or(name);
    match intern(name) {
        Some(t) => Cow::Borrowed(t),
        None => Cow::Owned(name.to_owned()),
    }
}

/// Whether a primitive JSON value of unknown FHIR type could be of type `want`: without
/// model information a string may be a `canonical` or a `date` as well as a `string`.
fn untyped_primitive_is(v: &Value, want: &str) -> bool {
    let system = system_type(want);
    match v {
        Value::String(s) => match system {
            Some("String") => true,
            Some("Date" | "DateTime" | "Time") => Temporal::parse(s).is_some_and(|t| {
                let kind = match t.kind {
                    crate::temporal::TemporalKind::Date => "Date",
                    crate::temporal::TemporalKind::DateTime => "DateTime",
                    crate::temporal::TemporalKind::Time => "Time",
                };
                // A date-only string is also a valid (partial) dateTime.
                system == Some(kind) || (kind == "Date" && system == Some("DateTime"))
            }),
            _ => false,
        },
        Value::Number(n) => match system {
            Some("Integer") => n.as_i64().is_some(),
            Some("Decimal") => true,
            _ => false,
        },
        Value::Bool(_) => system == Some("Boolean"),
        _ => false,
    }
}

/// The type to assume for a value without type information.
fn inferred_type(v: &Value) -> Option<&str> {
    match v {
        Value::Object(o) => o.get("resourceType").and_then(Value::as_str),
        Value::Bool(_) => Some("boolean"),
        Value::Number(n) if n.as_i64().is_some() => Some("integer"),
        Value::Number(_) => Some("decimal"),
        Value::String(_) => Some("string"),
        _ => None,
    }
}

/// Pushes a JSON value (flattening arrays, skipping nulls) with its type; embedded resources
/// always carry their own `resourceType` as type.
fn push_values<'v>(value: &'v Value, ty: Option<Cow<'v, str>>, out: &mut Vec<Item<'v>>) {
    let one = |v: &'v Value, ty: &Option<Cow<'v, str>>| -> Option<Item<'v>> {
        if v.is_null() {
            return None;
        }
        let own = v
            .get("resourceType")
            .and_then(Value::as_str)
            .map(Cow::Borrowed);
        Some(Item {
            value: Cow::Borrowed(v),
            type_name: own.or_else(|| ty.clone()),
        })
    };
    match value {
        Value::Array(items) => out.extend(items.iter().filter_map(|v| one(v, &ty))),
        v => out.extend(one(v, &ty)),
    }
}
