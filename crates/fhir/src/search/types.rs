//! The backend-neutral vocabulary of search: what is indexed for a resource, and what a query asks.
//!
//! Extraction (`index`) turns a resource into [`IndexEntry`] rows; parsing (`query`) turns URL
//! parameters into a [`SearchQuery`]; a storage backend translates the query into its own SQL.

use serde::{Deserialize, Serialize};

/// The type of a search parameter, as in `SearchParameter.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Simple string, matched case- and accent-insensitively by prefix by default.
    String,
    /// A code with an optional system (`system|code`).
    Token,
    /// A point or range in time.
    Date,
    /// A reference to another resource, local or absolute.
    Reference,
    /// A number with implicit precision.
    Number,
    /// A number with a unit system and code.
    Quantity,
    /// A URI, matched exactly or hierarchically (`:below`, `:above`).
    Uri,
    /// Two or more components matched together on the same element.
    Composite,
    /// Parameters with behaviour beyond the types above (e.g. `near`).
    Special,
}

/// One value extracted for one search parameter from one resource version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IndexValue {
    /// A string: `normalized` is lowercased with accents removed (used for default and
    /// `:contains` matching), `exact` is the original text (used for `:exact`).
    String {
        /// Lowercased, accent-stripped text.
        normalized: String,
        /// Original text.
        exact: String,
    },
    /// A token from a code, Coding, CodeableConcept, Identifier, ContactPoint, boolean, etc.
    Token {
        /// Code system (or identifier system); `None` when the element had none.
        system: Option<String>,
        /// The code (or identifier value).
        code: Option<String>,
        /// Display or text, for the `:text` modifier (normalized like strings).
        text: Option<String>,
    },
    /// A date range: inclusive bounds in milliseconds since the Unix epoch (UTC).
    /// A single instant has `start == end`; a partial date such as `2020-03` covers the month.
    Date {
        /// First millisecond covered.
        start: i64,
        /// Last millisecond covered.
        end: i64,
    },
    /// A number with the range its precision implies (`1.5` → [1.45, 1.55)).
    Number {
        /// The stated value.
        value: f64,
        /// Lower bound of the implied range (inclusive).
        low: f64,
        /// Upper bound of the implied range (exclusive).
        high: f64,
    },
    /// A quantity (Quantity, Money, Age, Duration, … or a Range's bounds).
    Quantity {
        /// The stated value.
        value: f64,
        /// Lower bound of the implied range.
        low: f64,
        /// Upper bound of the implied range.
        high: f64,
        /// Unit system, e.g. `http://unitsofmeasure.org`.
        system: Option<String>,
        /// Unit code, e.g. `mg`.
        code: Option<String>,
        /// Human unit text, also matched by a search without a system.
        unit: Option<String>,
    },
    /// A reference. Local references (`Patient/123`) fill `target_type`/`target_id`;
    /// absolute or canonical references fill `url` (and `version` for `url|version`).
    Reference {
        /// Resource type of a local or absolute RESTful reference.
        target_type: Option<String>,
        /// Logical id of the target.
        target_id: Option<String>,
        /// Absolute URL or canonical URL as written (without `|version`).
        url: Option<String>,
        /// Version of a canonical reference (`url|version`) or of `_history/N`.
        version: Option<String>,
        /// `Reference.identifier` as (system, value), for the `:identifier` modifier.
        identifier: Option<(Option<String>, String)>,
    },
    /// A URI or canonical, stored as written.
    Uri(String),
    /// The component values of one composite occurrence, in component order.
    Composite(Vec<IndexValue>),
}

impl IndexValue {
    /// Cuts the text that search indexes hold (a string's normalized form, a token's or a
    /// quantity's system and code, a reference's URL, a URI) to
    /// [`MAX_INDEXED_TEXT_BYTES`](super::MAX_INDEXED_TEXT_BYTES); see [`super::index_text`].
    /// Text that is only compared, never indexed (a string's exact form, a token's display),
    /// is kept whole.
    pub fn cap_indexed_text(&mut self) {
        fn cap(text: &mut String) {
            let keep = super::index_text(text).len();
            text.truncate(keep);
        }
        match self {
            IndexValue::String { normalized, .. } => cap(normalized),
            IndexValue::Token { system, code, .. } | IndexValue::Quantity { system, code, .. } => {
                system.iter_mut().chain(code.iter_mut()).for_each(cap)
            }
            IndexValue::Reference { url, .. } => url.iter_mut().for_each(cap),
            IndexValue::Uri(uri) => cap(uri),
            IndexValue::Composite(parts) => parts.iter_mut().for_each(IndexValue::cap_indexed_text),
            IndexValue::Date { .. } | IndexValue::Number { .. } => {}
        }
    }
}

/// One index row: a parameter code and one of its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The search parameter code, e.g. `birthdate`.
    pub param: String,
    /// The extracted value.
    pub value: IndexValue,
}

/// Comparison prefix for ordered parameter types (date, number, quantity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Prefix {
    /// `eq` (default): the ranges overlap fully — the resource's range is within the parameter's.
    #[default]
    Eq,
    /// `ne`: not `eq`.
    Ne,
    /// `gt`: the resource's range extends above the parameter's.
    Gt,
    /// `lt`: the resource's range extends below the parameter's.
    Lt,
    /// `ge`: `gt` or `eq`.
    Ge,
    /// `le`: `lt` or `eq`.
    Le,
    /// `sa`: starts after the parameter's range ends.
    Sa,
    /// `eb`: ends before the parameter's range starts.
    Eb,
    /// `ap`: approximately (within 10% for numbers, ±10% of distance to now for dates).
    Ap,
}

/// Token system constraint as written in `system|code`, `|code` or `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenSystem {
    /// `code`: any system.
    Any,
    /// `|code`: the element has no system.
    NoSystem,
    /// `system|code` or `system|`.
    Is(String),
}

/// One parsed value of a search parameter (values separated by `,` are ORed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SearchValue {
    /// String value (already unescaped); compare normalized unless the modifier says otherwise.
    String(String),
    /// Token value. `code: None` for `system|` (any code in the system).
    Token {
        /// System constraint.
        system: TokenSystem,
        /// Code, if given.
        code: Option<String>,
    },
    /// Date value: the parameter's own range in epoch milliseconds (inclusive).
    Date {
        /// Comparison prefix.
        prefix: Prefix,
        /// First millisecond of the value's precision range.
        start: i64,
        /// Last millisecond of the value's precision range.
        end: i64,
    },
    /// Number value with its implicit precision range.
    Number {
        /// Comparison prefix.
        prefix: Prefix,
        /// Stated value.
        value: f64,
        /// Lower bound implied by precision (inclusive).
        low: f64,
        /// Upper bound implied by precision (exclusive).
        high: f64,
    },
    /// Quantity value `[prefix]number|system|code` (or `number||unit`).
    Quantity {
        /// Comparison prefix.
        prefix: Prefix,
        /// Stated value.
        value: f64,
        /// Lower bound implied by precision.
        low: f64,
        /// Upper bound implied by precision.
        high: f64,
        /// Unit system, if given.
        system: Option<String>,
        /// Unit code (or unit text when no system is given), if given.
        code: Option<String>,
    },
    /// Reference value: `Type/id`, `id` (with `target_type` from `:Type` or the only target),
    /// or an absolute/canonical URL (`url`, optionally `|version`).
    Reference {
        /// Target type, when known.
        target_type: Option<String>,
        /// Target id for local references.
        target_id: Option<String>,
        /// Absolute or canonical URL.
        url: Option<String>,
        /// Version for `url|version`.
        version: Option<String>,
    },
    /// Reference matched by identifier (`:identifier` modifier): `system|value`.
    ReferenceIdentifier {
        /// Identifier system constraint.
        system: TokenSystem,
        /// Identifier value, if given.
        value: Option<String>,
    },
    /// URI value.
    Uri(String),
    /// Composite value: component values in order, separated by `$` in the URL.
    Composite(Vec<SearchValue>),
}

/// Modifier after the parameter name (`name:exact`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Modifier {
    /// No modifier.
    None,
    /// `:exact` (string): case- and accent-sensitive whole-string match.
    Exact,
    /// `:contains` (string, uri): substring match.
    Contains,
    /// `:missing=true|false`.
    Missing(bool),
    /// `:not` (token): no value of the parameter matches.
    Not,
    /// `:text` (token): match on display/text.
    Text,
    /// `:identifier` (reference): match on Reference.identifier.
    Identifier,
    /// `:below` (uri, token): hierarchy below — for uri, prefix match.
    Below,
    /// `:above` (uri, token): hierarchy above — for uri, the value starts with the stored uri.
    Above,
    /// `:in` (token): code in a value set (value is the ValueSet URL).
    In,
    /// `:not-in` (token).
    NotIn,
    /// `:[type]` (reference): target type restriction, e.g. `subject:Patient`.
    Type(String),
    /// `:of-type` (token, Identifier only): `system|typeCode|value`.
    OfType,
}

/// One condition of a search. All filters of a query are ANDed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Filter {
    /// A condition on one parameter of the searched resource: any of `values` matches (OR).
    /// For `Modifier::Missing` the values list is empty.
    Param {
        /// Parameter code, e.g. `birthdate`; `_id` and `_lastUpdated` are ordinary parameters
        /// here (token and date) and backends may map them to columns.
        code: String,
        /// The parameter's type.
        param_type: ParamType,
        /// Modifier.
        modifier: Modifier,
        /// Values, ORed.
        values: Vec<SearchValue>,
    },
    /// A chained parameter `ref[:Type].inner`: some resource referenced by `reference_param`
    /// (restricted to `target_types`) satisfies `inner`.
    Chain {
        /// Reference parameter code on the searched resource.
        reference_param: String,
        /// Candidate target types (from `:Type` or the parameter's targets that define the
        /// inner parameter).
        target_types: Vec<String>,
        /// Condition on the referenced resource.
        inner: Box<Filter>,
    },
    /// Reverse chain `_has:SourceType:refParam:inner`: some `source_type` resource whose
    /// `reference_param` points at the searched resource satisfies `inner`.
    Has {
        /// Type of the referring resource.
        source_type: String,
        /// Reference parameter on the referring resource.
        reference_param: String,
        /// Condition on the referring resource.
        inner: Box<Filter>,
    },
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortDirection {
    /// Ascending (`_sort=param`).
    Ascending,
    /// Descending (`_sort=-param`).
    Descending,
}

/// One `_sort` key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SortKey {
    /// Parameter code (`_id`, `_lastUpdated` or any parameter of the type).
    pub code: String,
    /// The parameter's type.
    pub param_type: ParamType,
    /// Direction.
    pub direction: SortDirection,
}

/// `_total` handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TotalMode {
    /// No total requested (the server may still give one when cheap).
    #[default]
    None,
    /// An estimate is enough.
    Estimate,
    /// An exact count.
    Accurate,
}

/// `_summary` handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SummaryMode {
    /// Full resources.
    #[default]
    False,
    /// Only summary elements.
    True,
    /// Only the count (no entries).
    Count,
    /// Remove text.
    Data,
    /// Only text, id, meta and mandatory elements.
    Text,
}

/// An `_include` or `_revinclude` directive: `SourceType:param[:TargetType]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Include {
    /// Type of the resource holding the reference (`*` for any).
    pub source_type: String,
    /// Reference parameter code (`*` for all reference parameters).
    pub param: String,
    /// Optional restriction of the target type.
    pub target_type: Option<String>,
    /// `:iterate` (or the older `:recurse`): apply to included resources too.
    pub iterate: bool,
}

/// A parsed search request, ready for a storage backend.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Resource type searched; `None` for a system-level search across all types.
    pub resource_type: Option<String>,
    /// Conditions, ANDed.
    pub filters: Vec<Filter>,
    /// Sort keys in priority order; empty = stable default order.
    pub sort: Vec<SortKey>,
    /// Page size requested (`_count`), already clamped by the server.
    pub count: Option<usize>,
    /// `_total`.
    pub total: TotalMode,
    /// `_summary`.
    pub summary: SummaryMode,
    /// `_elements`, if given.
    pub elements: Option<Vec<String>>,
    /// `_include` directives.
    pub includes: Vec<Include>,
    /// `_revinclude` directives.
    pub revincludes: Vec<Include>,
}
