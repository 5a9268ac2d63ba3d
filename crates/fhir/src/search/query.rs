//! Parsing of search requests (URL query parameters) into a [`SearchQuery`](super::SearchQuery).
//!
//! The input is the list of already percent-decoded `(name, value)` pairs. Repeated names are
//! ANDed (one [`Filter`] each); comma-separated values are ORed (the values of one filter).
//! Within a value `\,`, `\$`, `\|` and `\\` stand for the literal characters.

use super::index::parse_reference;
use super::values::{parse_date_range, parse_number_range};
use super::{
    Filter, Include, IndexValue, Modifier, ParamType, Prefix, SearchQuery, SearchValue,
    SortDirection, SortKey, SummaryMode, TokenSystem, TotalMode,
};
use crate::definitions::{Definitions, SearchParamDef};
use crate::outcome::{IssueSeverity, IssueType, OperationOutcome};

/// Parameters the engine handles itself (paging, formatting, history bounds); the parser skips
/// them silently, without warning.
pub const IGNORED_PARAMS: &[&str] = &[
    "_format",
    "_pretty",
    "_cursor",
    "_page",
    "_getpages",
    "_offset",
    "_at",
    "_since",
];

/// Deepest chain (`a.b.c…`) or `_has` nesting accepted; deeper ones are rejected rather than
/// handed to a backend as a join explosion.
const MAX_CHAIN_DEPTH: usize = 4;

/// The result of parsing a search request.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSearch {
    /// The query for the storage backend.
    pub query: SearchQuery,
    /// Warnings about parameters that were ignored (unknown or unsupported, lenient mode only).
    /// Empty when everything was understood.
    pub warnings: OperationOutcome,
    /// `_count` as requested, before any clamping by the server (also in `query.count`).
    pub count: Option<usize>,
}

/// Parses a search request.
///
/// `resource_type` is `None` for a system-level search (`GET [base]?…`), where `_type`
/// (comma list) restricts the types and appears in the query as a token filter with code
/// `_type`; without `_type` only the parameters common to all resources are known.
///
/// With `strict` (`Prefer: handling=strict`), unknown or unsupported parameters are an error;
/// otherwise they are ignored with a warning in [`ParsedSearch::warnings`]. Invalid values and
/// invalid modifiers are errors either way, since ignoring them would change the meaning of the
/// search. Errors are OperationOutcomes meant for a 400 response.
pub fn parse(
    resource_type: Option<&str>,
    params: &[(String, String)],
    strict: bool,
) -> Result<ParsedSearch, OperationOutcome> {
    let defs = crate::r4();
    if let Some(rt) = resource_type {
        if !defs.is_resource_type(rt) {
            return Err(OperationOutcome::error(
                IssueType::NotSupported,
                format!("Unknown resource type '{rt}'"),
            ));
        }
    }
    let mut parser = Parser {
        defs,
        strict,
        warnings: OperationOutcome::default(),
        unknown: Vec::new(),
        query: SearchQuery {
            resource_type: resource_type.map(str::to_owned),
            ..SearchQuery::default()
        },
    };
    // `_type` decides which parameters exist in a system search, so it goes first.
    let mut system_types: Vec<String> = Vec::new();
    if resource_type.is_none() {
        for (name, value) in params.iter().filter(|(n, _)| n == "_type") {
            let types = parser.parse_type_param(name, value)?;
            system_types.extend(types);
        }
    }
    let scope = match (resource_type, system_types.as_slice()) {
        (Some(rt), _) => Scope::Type(rt),
        (None, [only]) => Scope::Type(only),
        (None, types) => Scope::System(types),
    };
    for (name, value) in params {
        if name.is_empty() || IGNORED_PARAMS.contains(&name.as_str()) {
            continue;
        }
        if name == "_type" && resource_type.is_none() {
            continue;
        }
        parser.parse_param(scope, name, value)?;
    }
    if !parser.unknown.is_empty() {
        let names = parser.unknown.join("', '");
        let on = match resource_type {
            Some(rt) => format!(" for {rt}"),
            None => String::new(),
        };
        let msg = if parser.unknown.len() == 1 {
            format!("Unknown search parameter '{names}'{on}")
        } else {
            format!("Unknown search parameters '{names}'{on}")
        };
        if strict {
            return Err(OperationOutcome::error(IssueType::NotSupported, msg));
        }
        parser.warnings.push(
            IssueSeverity::Warning,
            IssueType::NotSupported,
            format!("{msg}: ignored"),
            None,
        );
    }
    let count = parser.query.count;
    Ok(ParsedSearch {
        query: parser.query,
        warnings: parser.warnings,
        count,
    })
}

/// The resource types a parameter name is resolved against.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    /// One resource type.
    Type(&'a str),
    /// A system search over these types (all types when empty).
    System(&'a [String]),
}

/// Why a parameter could not be turned into a filter.
#[derive(Debug)]
enum ParamError {
    /// The name is not a parameter here (collected and reported together).
    Unknown,
    /// The parameter exists but phip cannot search on it (`near`, `_text`, …).
    Unsupported(String),
    /// Bad syntax or value: always a 400.
    Invalid(String),
}

struct Parser {
    defs: &'static Definitions,
    strict: bool,
    warnings: OperationOutcome,
    unknown: Vec<String>,
    query: SearchQuery,
}

fn invalid(msg: impl Into<String>) -> OperationOutcome {
    OperationOutcome::error(IssueType::Invalid, msg)
}

impl Parser {
    /// Reports something the server does not support: an error in strict mode, otherwise a
    /// warning and the parameter is skipped.
    fn unsupported(&mut self, msg: String) -> Result<(), OperationOutcome> {
        if self.strict {
            return Err(OperationOutcome::error(IssueType::NotSupported, msg));
        }
        self.warnings.push(
            IssueSeverity::Warning,
            IssueType::NotSupported,
            format!("{msg}: ignored"),
            None,
        );
        Ok(())
    }

    fn note_unknown(&mut self, name: &str) {
        if !self.unknown.iter().any(|n| n == name) {
            self.unknown.push(name.to_owned());
        }
    }

    fn parse_type_param(
        &mut self,
        name: &str,
        value: &str,
    ) -> Result<Vec<String>, OperationOutcome> {
        let types: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = types.iter().find(|t| !self.defs.is_resource_type(t)) {
            return Err(invalid(format!("Unknown resource type '{bad}' in {name}")));
        }
        if !types.is_empty() {
            self.query.filters.push(Filter::Param {
                code: "_type".to_owned(),
                param_type: ParamType::Token,
                modifier: Modifier::None,
                values: types
                    .iter()
                    .map(|t| SearchValue::Token {
                        system: TokenSystem::Any,
                        code: Some(t.clone()),
                    })
                    .collect(),
            });
        }
        Ok(types)
    }

    fn parse_param(
        &mut self,
        scope: Scope<'_>,
        name: &str,
        value: &str,
    ) -> Result<(), OperationOutcome> {
        let (base, modifier) = match name.split_once(':') {
            Some((b, m)) => (b, Some(m)),
            None => (name, None),
        };
        match base {
            "_count" if modifier.is_none() => {
                let n = value.trim().parse::<usize>().map_err(|_| {
                    invalid(format!(
                        "_count must be a non-negative integer, not '{value}'"
                    ))
                })?;
                self.query.count = Some(n);
            }
            "_total" if modifier.is_none() => {
                self.query.total = match value.trim() {
                    "none" => TotalMode::None,
                    "estimate" => TotalMode::Estimate,
                    "accurate" => TotalMode::Accurate,
                    other => {
                        return Err(invalid(format!(
                            "_total must be none, estimate or accurate, not '{other}'"
                        )))
                    }
                };
            }
            "_summary" if modifier.is_none() => {
                self.query.summary = match value.trim() {
                    "true" => SummaryMode::True,
                    "false" => SummaryMode::False,
                    "count" => SummaryMode::Count,
                    "data" => SummaryMode::Data,
                    "text" => SummaryMode::Text,
                    other => {
                        return Err(invalid(format!(
                            "_summary must be true, false, count, data or text, not '{other}'"
                        )))
                    }
                };
            }
            "_elements" if modifier.is_none() => {
                let mut given = value.split(',').map(str::trim).filter(|e| !e.is_empty());
                let Some(first) = given.next() else {
                    return Ok(());
                };
                let elements = self.query.elements.get_or_insert_with(Vec::new);
                for e in std::iter::once(first).chain(given) {
                    if !elements.iter().any(|x| x == e) {
                        elements.push(e.to_owned());
                    }
                }
            }
            "_sort" if modifier.is_none() => self.parse_sort(scope, value)?,
            "_include" | "_revinclude" => {
                let iterate = match modifier {
                    None => false,
                    Some("iterate" | "recurse") => true,
                    Some(m) => {
                        return Err(invalid(format!(
                            "Unknown modifier ':{m}' on {base} (only :iterate)"
                        )))
                    }
                };
                for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                    if let Some(include) = self.parse_include(base, v, iterate)? {
                        if base == "_include" {
                            self.query.includes.push(include);
                        } else {
                            self.query.revincludes.push(include);
                        }
                    }
                }
            }
            "_contained" if modifier.is_none() => match value.trim() {
                "false" => {}
                "true" | "both" => {
                    self.unsupported(format!("_contained={} is not supported", value.trim()))?
                }
                other => {
                    return Err(invalid(format!(
                        "_contained must be true, false or both, not '{other}'"
                    )))
                }
            },
            "_containedType" if modifier.is_none() => match value.trim() {
                "container" => {}
                "contained" => {
                    self.unsupported("_containedType=contained is not supported".to_owned())?
                }
                other => {
                    return Err(invalid(format!(
                        "_containedType must be container or contained, not '{other}'"
                    )))
                }
            },
            _ => match parse_filter(self.defs, scope, name, value, 0) {
                Ok(Some(filter)) => self.query.filters.push(filter),
                Ok(None) => {}
                Err(ParamError::Unknown) => self.note_unknown(name),
                Err(ParamError::Unsupported(msg)) => self.unsupported(msg)?,
                Err(ParamError::Invalid(msg)) => return Err(invalid(msg)),
            },
        }
        Ok(())
    }

    fn parse_sort(&mut self, scope: Scope<'_>, value: &str) -> Result<(), OperationOutcome> {
        for key in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let (code, direction) = match key.strip_prefix('-') {
                Some(code) => (code, SortDirection::Descending),
                None => (key, SortDirection::Ascending),
            };
            match lookup(self.defs, scope, code) {
                Some(def) if is_sortable(def) => self.query.sort.push(SortKey {
                    code: code.to_owned(),
                    param_type: def.param_type,
                    direction,
                }),
                Some(_) => self.unsupported(format!("Cannot sort by '{code}'"))?,
                None => self.unsupported(format!("Unknown sort parameter '{code}'"))?,
            }
        }
        Ok(())
    }

    fn parse_include(
        &mut self,
        name: &str,
        value: &str,
        iterate: bool,
    ) -> Result<Option<Include>, OperationOutcome> {
        if value == "*" {
            return Ok(Some(Include {
                source_type: "*".to_owned(),
                param: "*".to_owned(),
                target_type: None,
                iterate,
            }));
        }
        let parts: Vec<&str> = value.split(':').collect();
        let (source, param, target) = match parts.as_slice() {
            [s, p] => (*s, *p, None),
            [s, p, t] => (*s, *p, Some(*t)),
            _ => {
                return Err(invalid(format!(
                    "{name} must be SourceType:param[:TargetType], not '{value}'"
                )))
            }
        };
        if source != "*" && !self.defs.is_resource_type(source) {
            return Err(invalid(format!(
                "Unknown resource type '{source}' in {name}={value}"
            )));
        }
        if let Some(t) = target {
            if !self.defs.is_resource_type(t) {
                return Err(invalid(format!(
                    "Unknown resource type '{t}' in {name}={value}"
                )));
            }
        }
        if param != "*" && source != "*" {
            match self.defs.search_param(source, param) {
                Some(def) if def.param_type == ParamType::Reference => {
                    if let Some(t) = target {
                        if !def.targets.is_empty() && !def.targets.iter().any(|x| x == t) {
                            return Err(invalid(format!(
                                "{source}:{param} cannot refer to {t} ({name}={value})"
                            )));
                        }
                    }
                }
                Some(_) => {
                    return Err(invalid(format!(
                        "{source}:{param} is not a reference parameter ({name}={value})"
                    )))
                }
                None => {
                    self.unsupported(format!(
                        "Unknown search parameter '{param}' for {source} in {name}"
                    ))?;
                    return Ok(None);
                }
            }
        }
        Ok(Some(Include {
            source_type: source.to_owned(),
            param: param.to_owned(),
            target_type: target.map(str::to_owned),
            iterate,
        }))
    }
}

/// Whether `_sort` can use the parameter.
fn is_sortable(def: &SearchParamDef) -> bool {
    def.compiled.is_some() && !matches!(def.param_type, ParamType::Composite | ParamType::Special)
}

/// Resolves a parameter code in a scope. In a system search the parameter must exist, with the
/// same type, in every listed type; without `_type` only `Resource`-level parameters exist.
fn lookup(
    defs: &'static Definitions,
    scope: Scope<'_>,
    code: &str,
) -> Option<&'static SearchParamDef> {
    match scope {
        Scope::Type(t) => defs.search_param(t, code),
        Scope::System([]) => {
            // Bundle is a plain Resource, so it has exactly the Resource-level parameters.
            defs.search_param("Bundle", code)
                .filter(|d| d.base.iter().any(|b| b == "Resource"))
        }
        Scope::System(types) => {
            let first = defs.search_param(&types[0], code)?;
            types[1..]
                .iter()
                .all(|t| {
                    defs.search_param(t, code)
                        .is_some_and(|d| d.param_type == first.param_type)
                })
                .then_some(first)
        }
    }
}

/// Parses one filter parameter (possibly chained or reverse-chained). `Ok(None)` when the
/// value is empty (the spec says such parameters are ignored).
fn parse_filter(
    defs: &'static Definitions,
    scope: Scope<'_>,
    name: &str,
    value: &str,
    depth: usize,
) -> Result<Option<Filter>, ParamError> {
    if depth > MAX_CHAIN_DEPTH {
        return Err(ParamError::Invalid(format!(
            "Search parameter '{name}' nests chains or _has deeper than {MAX_CHAIN_DEPTH} levels"
        )));
    }
    if let Some(rest) = name.strip_prefix("_has:") {
        return parse_has(defs, scope, name, rest, value, depth);
    }
    if name == "_has" {
        return Err(ParamError::Invalid(
            "_has must be written _has:Type:reference:parameter".to_owned(),
        ));
    }
    if let Some((head, inner_name)) = name.split_once('.') {
        return parse_chain(defs, scope, name, head, inner_name, value, depth);
    }
    let (code, modifier_text) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    let def = lookup(defs, scope, code).ok_or(ParamError::Unknown)?;
    if def.compiled.is_none() || def.param_type == ParamType::Special {
        return Err(ParamError::Unsupported(format!(
            "Search parameter '{code}' is not supported"
        )));
    }
    let modifier = match modifier_text {
        None => Modifier::None,
        Some(m) => parse_modifier(defs, def, code, m)?,
    };
    if modifier == Modifier::Missing(false) {
        let missing = match value.trim() {
            "true" => true,
            "false" => false,
            other => {
                return Err(ParamError::Invalid(format!(
                    "{name} must be true or false, not '{other}'"
                )))
            }
        };
        return Ok(Some(Filter::Param {
            code: code.to_owned(),
            param_type: def.param_type,
            modifier: Modifier::Missing(missing),
            values: Vec::new(),
        }));
    }
    let mut values = Vec::new();
    for piece in split_escaped(value, ',') {
        if piece.trim().is_empty() {
            continue;
        }
        values.push(parse_value(defs, def, &modifier, name, piece)?);
    }
    if values.is_empty() {
        return Ok(None);
    }
    Ok(Some(Filter::Param {
        code: code.to_owned(),
        param_type: def.param_type,
        modifier,
        values,
    }))
}

/// `_has:SourceType:refParam:rest` where `rest` is a parameter of `SourceType` (itself
/// possibly a chain or another `_has`).
fn parse_has(
    defs: &'static Definitions,
    scope: Scope<'_>,
    name: &str,
    rest: &str,
    value: &str,
    depth: usize,
) -> Result<Option<Filter>, ParamError> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(ref_param), Some(inner_name)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(ParamError::Invalid(format!(
            "'{name}' must be _has:Type:reference:parameter"
        )));
    };
    if !defs.is_resource_type(source) {
        return Err(ParamError::Invalid(format!(
            "Unknown resource type '{source}' in '{name}'"
        )));
    }
    let ref_def = defs
        .search_param(source, ref_param)
        .ok_or(ParamError::Unknown)?;
    if ref_def.param_type != ParamType::Reference {
        return Err(ParamError::Invalid(format!(
            "{source}:{ref_param} is not a reference parameter (in '{name}')"
        )));
    }
    if let Scope::Type(t) = scope {
        if !ref_def.targets.is_empty() && !ref_def.targets.iter().any(|x| x == t) {
            return Err(ParamError::Invalid(format!(
                "{source}:{ref_param} cannot refer to {t} (in '{name}')"
            )));
        }
    }
    let Some(inner) = parse_filter(defs, Scope::Type(source), inner_name, value, depth + 1)? else {
        return Ok(None);
    };
    Ok(Some(Filter::Has {
        source_type: source.to_owned(),
        reference_param: ref_param.to_owned(),
        inner: Box::new(inner),
    }))
}

/// `ref[:Type].inner`: the target types are `Type`, or the reference's targets that define the
/// first parameter of `inner`.
fn parse_chain(
    defs: &'static Definitions,
    scope: Scope<'_>,
    name: &str,
    head: &str,
    inner_name: &str,
    value: &str,
    depth: usize,
) -> Result<Option<Filter>, ParamError> {
    let (code, type_modifier) = match head.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (head, None),
    };
    let def = lookup(defs, scope, code).ok_or(ParamError::Unknown)?;
    if def.param_type != ParamType::Reference {
        return Err(ParamError::Invalid(format!(
            "Cannot chain on '{code}' in '{name}': it is not a reference parameter"
        )));
    }
    let inner_code = inner_name.split(['.', ':']).next().unwrap_or(inner_name);
    let target_types: Vec<String> = match type_modifier {
        Some(t) => {
            if !defs.is_resource_type(t) {
                return Err(ParamError::Invalid(format!(
                    "'{t}' in '{name}' is not a resource type; only a type modifier can precede a chain"
                )));
            }
            if !def.targets.is_empty() && !def.targets.iter().any(|x| x == t) {
                return Err(ParamError::Invalid(format!(
                    "'{code}' cannot refer to {t} (in '{name}')"
                )));
            }
            vec![t.to_owned()]
        }
        None => def
            .targets
            .iter()
            .filter(|t| inner_code == "_has" || defs.search_param(t, inner_code).is_some())
            .cloned()
            .collect(),
    };
    // No target defines the inner parameter: the chain names an unknown parameter.
    let Some(first) = target_types.first() else {
        return Err(ParamError::Unknown);
    };
    let Some(inner) = parse_filter(defs, Scope::Type(first), inner_name, value, depth + 1)? else {
        return Ok(None);
    };
    Ok(Some(Filter::Chain {
        reference_param: code.to_owned(),
        target_types,
        inner: Box::new(inner),
    }))
}

/// Parses a modifier and checks it applies to the parameter's type. `:missing` comes back as
/// `Missing(false)`; the value decides the real flag.
fn parse_modifier(
    defs: &Definitions,
    def: &SearchParamDef,
    code: &str,
    text: &str,
) -> Result<Modifier, ParamError> {
    let modifier = match text {
        "missing" => Modifier::Missing(false),
        "exact" => Modifier::Exact,
        "contains" => Modifier::Contains,
        "not" => Modifier::Not,
        "text" => Modifier::Text,
        "identifier" => Modifier::Identifier,
        "below" => Modifier::Below,
        "above" => Modifier::Above,
        "in" => Modifier::In,
        "not-in" => Modifier::NotIn,
        "of-type" => Modifier::OfType,
        t if defs.is_resource_type(t) => Modifier::Type(t.to_owned()),
        other => {
            return Err(ParamError::Invalid(format!(
                "Unknown modifier ':{other}' on search parameter '{code}'"
            )))
        }
    };
    let ok = match (&modifier, def.param_type) {
        (Modifier::Missing(_), _) => true,
        (Modifier::Exact | Modifier::Contains, ParamType::String) => true,
        (Modifier::Contains | Modifier::Below | Modifier::Above, ParamType::Uri) => true,
        (
            Modifier::Not
            | Modifier::Text
            | Modifier::In
            | Modifier::NotIn
            | Modifier::Below
            | Modifier::Above
            | Modifier::OfType,
            ParamType::Token,
        ) => true,
        (Modifier::Identifier | Modifier::Below | Modifier::Above, ParamType::Reference) => true,
        (Modifier::Type(t), ParamType::Reference) => {
            if !def.targets.is_empty() && !def.targets.iter().any(|x| x == t) {
                return Err(ParamError::Invalid(format!(
                    "Search parameter '{code}' cannot refer to {t}"
                )));
            }
            true
        }
        _ => false,
    };
    if !ok {
        let kind = format!("{:?}", def.param_type).to_lowercase();
        return Err(ParamError::Invalid(format!(
            "Modifier ':{text}' is not allowed on {kind} search parameter '{code}'"
        )));
    }
    Ok(modifier)
}

/// Splits on `sep` where it is not escaped by a backslash; the pieces keep their escapes.
pub fn split_escaped(s: &str, sep: char) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            pieces.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    pieces.push(&s[start..]);
    pieces
}

/// Resolves the search escapes `\,` `\$` `\|` `\\`; any other backslash is kept as is.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next @ (',' | '$' | '|' | '\\')) = chars.peek() {
                out.push(next);
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Splits a leading comparison prefix (`ge2020` → `(Ge, "2020")`).
fn split_prefix(s: &str) -> (Prefix, &str) {
    let prefix = match s.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("gt") => Prefix::Gt,
        Some("lt") => Prefix::Lt,
        Some("ge") => Prefix::Ge,
        Some("le") => Prefix::Le,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, s),
    };
    (prefix, &s[2..])
}

/// `system|code`, `|code`, `system|` or `code`.
fn parse_token(raw: &str) -> SearchValue {
    match split_escaped(raw, '|').as_slice() {
        [code] => SearchValue::Token {
            system: TokenSystem::Any,
            code: Some(unescape(code)),
        },
        [system, code @ ..] => {
            let code = unescape(&code.join("|"));
            SearchValue::Token {
                system: if system.is_empty() {
                    TokenSystem::NoSystem
                } else {
                    TokenSystem::Is(unescape(system))
                },
                code: (!code.is_empty()).then_some(code),
            }
        }
        [] => unreachable!("split yields at least one piece"),
    }
}

/// Parses one (comma-separated) value for a parameter of `def`'s type.
fn parse_value(
    defs: &'static Definitions,
    def: &SearchParamDef,
    modifier: &Modifier,
    name: &str,
    raw: &str,
) -> Result<SearchValue, ParamError> {
    let bad = |what: &str| {
        ParamError::Invalid(format!(
            "Invalid {what} '{}' for search parameter '{name}'",
            unescape(raw)
        ))
    };
    Ok(match def.param_type {
        ParamType::String => SearchValue::String(unescape(raw)),
        ParamType::Uri => SearchValue::Uri(unescape(raw)),
        ParamType::Token => match modifier {
            Modifier::Text => SearchValue::String(unescape(raw)),
            Modifier::In | Modifier::NotIn => SearchValue::Uri(unescape(raw)),
            Modifier::OfType => match split_escaped(raw, '|').as_slice() {
                [system, code, value] if !code.is_empty() && !value.is_empty() => {
                    SearchValue::Composite(vec![
                        SearchValue::Token {
                            system: if system.is_empty() {
                                TokenSystem::NoSystem
                            } else {
                                TokenSystem::Is(unescape(system))
                            },
                            code: Some(unescape(code)),
                        },
                        SearchValue::Token {
                            system: TokenSystem::Any,
                            code: Some(unescape(value)),
                        },
                    ])
                }
                _ => return Err(bad("identifier type (expected system|code|value)")),
            },
            _ => parse_token(raw),
        },
        ParamType::Date => {
            let (prefix, rest) = split_prefix(raw.trim());
            // An unencoded `+` of a zone offset arrives form-decoded as a space.
            let rest = rest.replace(' ', "+");
            let (start, end) = parse_date_range(&rest).ok_or_else(|| bad("date"))?;
            SearchValue::Date { prefix, start, end }
        }
        ParamType::Number => {
            let (prefix, rest) = split_prefix(raw.trim());
            let (value, low, high) = parse_number_range(rest).ok_or_else(|| bad("number"))?;
            SearchValue::Number {
                prefix,
                value,
                low,
                high,
            }
        }
        ParamType::Quantity => {
            let parts = split_escaped(raw, '|');
            let (number, system, code) = match parts.as_slice() {
                [n] => (*n, None, None),
                [n, s, c] => (*n, Some(*s), Some(*c)),
                _ => return Err(bad("quantity (expected number|system|code)")),
            };
            let (prefix, rest) = split_prefix(number.trim());
            let (value, low, high) = parse_number_range(rest).ok_or_else(|| bad("quantity"))?;
            let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(unescape);
            SearchValue::Quantity {
                prefix,
                value,
                low,
                high,
                system: non_empty(system),
                code: non_empty(code),
            }
        }
        ParamType::Reference => parse_reference_value(defs, def, modifier, raw, &bad)?,
        ParamType::Composite => {
            let parts = split_escaped(raw, '$');
            if parts.len() != def.components.len() {
                return Err(ParamError::Invalid(format!(
                    "Search parameter '{name}' needs {} components separated by '$', got '{}'",
                    def.components.len(),
                    unescape(raw)
                )));
            }
            let mut values = Vec::with_capacity(parts.len());
            for ((url, _), part) in def.components.iter().zip(parts) {
                let component = defs.search_param_by_url(url).ok_or_else(|| {
                    ParamError::Unsupported(format!(
                        "Search parameter '{name}' has an unknown component {url}"
                    ))
                })?;
                if component.param_type == ParamType::Composite {
                    return Err(bad("composite"));
                }
                values.push(parse_value(defs, component, &Modifier::None, name, part)?);
            }
            SearchValue::Composite(values)
        }
        ParamType::Special => {
            return Err(ParamError::Unsupported(format!(
                "Search parameter '{name}' is not supported"
            )))
        }
    })
}

fn parse_reference_value(
    defs: &'static Definitions,
    def: &SearchParamDef,
    modifier: &Modifier,
    raw: &str,
    bad: &dyn Fn(&str) -> ParamError,
) -> Result<SearchValue, ParamError> {
    if *modifier == Modifier::Identifier {
        return Ok(match parse_token(raw) {
            SearchValue::Token { system, code } => SearchValue::ReferenceIdentifier {
                system,
                value: code,
            },
            _ => unreachable!("parse_token gives a token"),
        });
    }
    let value = unescape(raw.trim());
    let type_modifier = match modifier {
        Modifier::Type(t) => Some(t.as_str()),
        _ => None,
    };
    let absolute = value.contains("://") || value.starts_with("urn:");
    if !absolute && !value.contains('/') {
        // A bare id: the type comes from `:Type` or the parameter's only target.
        let target_type =
            type_modifier
                .map(str::to_owned)
                .or_else(|| match def.targets.as_slice() {
                    [only] => Some(only.clone()),
                    _ => None,
                });
        let (id, version) = match value.split_once('|') {
            Some((id, v)) => (id.to_owned(), Some(v.to_owned())),
            None => (value, None),
        };
        return Ok(SearchValue::Reference {
            target_type,
            target_id: Some(id),
            url: None,
            version,
        });
    }
    let Some(IndexValue::Reference {
        target_type,
        target_id,
        url,
        version,
        ..
    }) = parse_reference(&value)
    else {
        return Err(bad("reference"));
    };
    if !absolute && target_type.is_none() {
        let ty = value.split('/').next().unwrap_or_default();
        if !defs.is_resource_type(ty) {
            return Err(bad("reference (unknown resource type)"));
        }
        return Err(bad("reference"));
    }
    if let (Some(m), Some(t)) = (type_modifier, &target_type) {
        if m != t && !absolute {
            return Err(bad(&format!("reference (not a {m})")));
        }
    }
    Ok(SearchValue::Reference {
        target_type,
        target_id,
        url,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_unescapes() {
        assert_eq!(
            split_escaped("a,b\\,c,,d", ','),
            vec!["a", "b\\,c", "", "d"]
        );
        assert_eq!(unescape("b\\,c"), "b,c");
        assert_eq!(unescape("a\\\\b\\|c\\$d\\x"), "a\\b|c$d\\x");
        assert_eq!(split_escaped("a\\\\,b", ','), vec!["a\\\\", "b"]);
        assert_eq!(split_escaped("", ','), vec![""]);
    }

    #[test]
    fn prefixes() {
        assert_eq!(split_prefix("ge2020"), (Prefix::Ge, "2020"));
        assert_eq!(split_prefix("2020"), (Prefix::Eq, "2020"));
        assert_eq!(split_prefix("ap5"), (Prefix::Ap, "5"));
        assert_eq!(split_prefix("x"), (Prefix::Eq, "x"));
    }

    #[test]
    fn tokens() {
        assert_eq!(
            parse_token("http://loinc.org|1234-5"),
            SearchValue::Token {
                system: TokenSystem::Is("http://loinc.org".into()),
                code: Some("1234-5".into())
            }
        );
        assert_eq!(
            parse_token("|x"),
            SearchValue::Token {
                system: TokenSystem::NoSystem,
                code: Some("x".into())
            }
        );
        assert_eq!(
            parse_token("sys|"),
            SearchValue::Token {
                system: TokenSystem::Is("sys".into()),
                code: None
            }
        );
        assert_eq!(
            parse_token("a\\|b"),
            SearchValue::Token {
                system: TokenSystem::Any,
                code: Some("a|b".into())
            }
        );
    }
}
