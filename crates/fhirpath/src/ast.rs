//! The parsed form of an expression.

use serde_json::Value;

/// An expression node.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// `{}`.
    Empty,
    /// A literal with its System type name.
    Literal(Value, &'static str),
    /// Member navigation; without a target it applies to the current input (`$this` or the
    /// context), where a type name also selects input items of that type.
    Member(Option<Box<Node>>, String),
    /// Function invocation; without a target it applies to the current input.
    Call(Option<Box<Node>>, Func, Vec<Node>),
    /// A type name given to `ofType`, `is`, `as` (only valid as their argument).
    Type(TypeSpec),
    This,
    Index,
    Total,
    /// `%name`.
    External(String),
    Indexer(Box<Node>, Box<Node>),
    Neg(Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    Is(Box<Node>, TypeSpec),
    As(Box<Node>, TypeSpec),
}

/// A possibly namespaced type name (`Quantity`, `FHIR.Patient`, `System.String`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeSpec {
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

impl BinOp {
    /// Binding power: higher binds tighter (FHIRPath operator precedence, `is`/`as` sit at 8).
    pub fn precedence(self) -> u8 {
        use BinOp::*;
        match self {
            Mul | Div | IntDiv | Mod => 10,
            Add | Sub | Concat => 9,
            Union => 7,
            Lt | Le | Gt | Ge => 6,
            Eq | Ne | Equiv | NotEquiv => 5,
            In | Contains => 4,
            And => 3,
            Or | Xor => 2,
            Implies => 1,
        }
    }
}

macro_rules! functions {
    ($( $variant:ident = $name:literal ($min:literal, $max:literal) ),* $(,)?) => {
        /// The supported functions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Func { $( $variant ),* }

        impl Func {
            /// Looks a function up by name; also returns its (min, max) argument count.
            pub fn lookup(name: &str) -> Option<(Func, usize, usize)> {
                match name {
                    $( $name => Some((Func::$variant, $min, $max)), )*
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self { $( Func::$variant => $name ),* }
            }
        }
    };
}

functions! {
    Empty = "empty"(0, 0),
    Exists = "exists"(0, 1),
    All = "all"(1, 1),
    AllTrue = "allTrue"(0, 0),
    AnyTrue = "anyTrue"(0, 0),
    AllFalse = "allFalse"(0, 0),
    AnyFalse = "anyFalse"(0, 0),
    SubsetOf = "subsetOf"(1, 1),
    SupersetOf = "supersetOf"(1, 1),
    Count = "count"(0, 0),
    Distinct = "distinct"(0, 0),
    IsDistinct = "isDistinct"(0, 0),
    Where = "where"(1, 1),
    Select = "select"(1, 1),
    Repeat = "repeat"(1, 1),
    OfType = "ofType"(1, 1),
    Is = "is"(1, 1),
    As = "as"(1, 1),
    Single = "single"(0, 0),
    First = "first"(0, 0),
    Last = "last"(0, 0),
    Tail = "tail"(0, 0),
    Skip = "skip"(1, 1),
    Take = "take"(1, 1),
    Intersect = "intersect"(1, 1),
    Exclude = "exclude"(1, 1),
    Union = "union"(1, 1),
    Combine = "combine"(1, 1),
    Iif = "iif"(2, 3),
    ToBoolean = "toBoolean"(0, 0),
    ConvertsToBoolean = "convertsToBoolean"(0, 0),
    ToInteger = "toInteger"(0, 0),
    ConvertsToInteger = "convertsToInteger"(0, 0),
    ToDecimal = "toDecimal"(0, 0),
    ConvertsToDecimal = "convertsToDecimal"(0, 0),
    ToStringFn = "toString"(0, 0),
    ConvertsToString = "convertsToString"(0, 0),
    ToDate = "toDate"(0, 0),
    ToDateTime = "toDateTime"(0, 0),
    IndexOf = "indexOf"(1, 1),
    Substring = "substring"(1, 2),
    StartsWith = "startsWith"(1, 1),
    EndsWith = "endsWith"(1, 1),
    ContainsStr = "contains"(1, 1),
    Upper = "upper"(0, 0),
    Lower = "lower"(0, 0),
    Replace = "replace"(2, 2),
    Matches = "matches"(1, 1),
    ReplaceMatches = "replaceMatches"(2, 2),
    Length = "length"(0, 0),
    ToChars = "toChars"(0, 0),
    Trim = "trim"(0, 0),
    Split = "split"(1, 1),
    Join = "join"(0, 1),
    Abs = "abs"(0, 0),
    Ceiling = "ceiling"(0, 0),
    Floor = "floor"(0, 0),
    Round = "round"(0, 1),
    Truncate = "truncate"(0, 0),
    Sqrt = "sqrt"(0, 0),
    Exp = "exp"(0, 0),
    Ln = "ln"(0, 0),
    Log = "log"(1, 1),
    Power = "power"(1, 1),
    Children = "children"(0, 0),
    Descendants = "descendants"(0, 0),
    Trace = "trace"(1, 2),
    Now = "now"(0, 0),
    Today = "today"(0, 0),
    TimeOfDay = "timeOfDay"(0, 0),
    Not = "not"(0, 0),
    HasValue = "hasValue"(0, 0),
    Resolve = "resolve"(0, 0),
    Extension = "extension"(1, 1),
    Aggregate = "aggregate"(1, 2),
    HtmlChecks = "htmlChecks"(0, 0),
}
