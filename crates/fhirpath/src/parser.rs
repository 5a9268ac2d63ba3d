//! Pratt parser producing [`Node`] trees.

use std::str::FromStr;

use serde_json::{Number, Value};

use crate::ast::{BinOp, Func, Node, TypeSpec};
use crate::lexer::{tokenize, Tok, Token};
use crate::temporal::{Temporal, TemporalKind};
use crate::Error;

/// Binding power of unary `+`/`-`: above every binary operator, below `.` and `[]`.
const UNARY_PRECEDENCE: u8 = 11;
/// `is` / `as` operators.
const TYPE_OP_PRECEDENCE: u8 = 8;
/// Guards against stack exhaustion on hostile input such as `((((((...`.
const MAX_DEPTH: usize = 200;

/// Calendar duration keywords allowed after a number to form a quantity (`3 days`).
const CALENDAR_UNITS: &[&str] = &[
    "year",
    "years",
    "month",
    "months",
    "week",
    "weeks",
    "day",
    "days",
    "hour",
    "hours",
    "minute",
    "minutes",
    "second",
    "seconds",
    "millisecond",
    "milliseconds",
];

pub(crate) fn parse(src: &str) -> Result<Node, Error> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let node = p.expr(0)?;
    match &p.peek().tok {
        Tok::Eof => Ok(node),
        _ => Err(p.error("unexpected token, expected an operator or end of expression")),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `at` never passes it.
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        // Always advancing (even past Eof, which `peek` clamps to) lets callers step back
        // with `at -= 1` after looking at a token.
        self.at += 1;
        t
    }

    fn error(&self, msg: &str) -> Error {
        let t = self.peek();
        let found = match &t.tok {
            Tok::Ident { name, .. } => format!("identifier '{name}'"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Num(n) => format!("number {n}"),
            Tok::Temporal(s) => format!("@{s}"),
            Tok::External(s) => format!("%{s}"),
            Tok::Special(s) => format!("${s}"),
            Tok::Sym(s) => format!("'{s}'"),
            Tok::Eof => "end of expression".to_owned(),
        };
        Error(format!("{msg} at position {} (found {found})", t.pos))
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(&self.peek().tok, Tok::Sym(s) if *s == sym) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), Error> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{sym}'")))
        }
    }

    /// The binary operator at the cursor, if any. Keyword operators only count unquoted.
    fn peek_binop(&self) -> Option<Result<BinOp, ()>> {
        use BinOp::*;
        Some(Ok(match &self.peek().tok {
            Tok::Sym(s) => match *s {
                "*" => Mul,
                "/" => Div,
                "+" => Add,
                "-" => Sub,
                "&" => Concat,
                "|" => Union,
                "<" => Lt,
                "<=" => Le,
                ">" => Gt,
                ">=" => Ge,
                "=" => Eq,
                "!=" => Ne,
                "~" => Equiv,
                "!~" => NotEquiv,
                _ => return None,
            },
            Tok::Ident {
                name,
                quoted: false,
            } => match name.as_str() {
                "div" => IntDiv,
                "mod" => Mod,
                "in" => In,
                "contains" => Contains,
                "and" => And,
                "or" => Or,
                "xor" => Xor,
                "implies" => Implies,
                // `is` / `as` are type operators, reported separately.
                "is" | "as" => return Some(Err(())),
                _ => return None,
            },
            _ => return None,
        }))
    }

    fn expr(&mut self, min_prec: u8) -> Result<Node, Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        let mut lhs = self.unary()?;
        loop {
            match self.peek_binop() {
                Some(Ok(op)) if op.precedence() >= min_prec => {
                    self.next();
                    let rhs = self.expr(op.precedence() + 1)?;
                    lhs = Node::Binary(op, Box::new(lhs), Box::new(rhs));
                }
                Some(Err(())) if TYPE_OP_PRECEDENCE >= min_prec => {
                    let is = matches!(&self.next().tok, Tok::Ident { name, .. } if name == "is");
                    let spec = self.type_spec()?;
                    lhs = if is {
                        Node::Is(Box::new(lhs), spec)
                    } else {
                        Node::As(Box::new(lhs), spec)
                    };
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(lhs)
    }

    /// A type specifier after `is`/`as`. Dots continue it only after a namespace, so that
    /// `value as Quantity.unit` is not read as a type named `Quantity.unit`.
    fn type_spec(&mut self) -> Result<TypeSpec, Error> {
        let first = match self.next().tok {
            Tok::Ident { name, .. } => name,
            _ => {
                self.at -= 1;
                return Err(self.error("expected a type name"));
            }
        };
        if matches!(first.as_str(), "FHIR" | "System")
            && matches!(&self.peek().tok, Tok::Sym("."))
            && matches!(
                self.tokens.get(self.at + 1).map(|t| &t.tok),
                Some(Tok::Ident { .. })
            )
        {
            self.next();
            if let Tok::Ident { name, .. } = self.next().tok {
                return Ok(TypeSpec {
                    namespace: Some(first),
                    name,
                });
            }
        }
        Ok(TypeSpec {
            namespace: None,
            name: first,
        })
    }

    fn unary(&mut self) -> Result<Node, Error> {
        if self.eat_sym("-") {
            let operand = self.expr(UNARY_PRECEDENCE)?;
            return Ok(match operand {
                Node::Literal(Value::Number(n), ty) => Node::Literal(Value::Number(negate(&n)), ty),
                other => Node::Neg(Box::new(other)),
            });
        }
        if self.eat_sym("+") {
            return self.expr(UNARY_PRECEDENCE);
        }
        let term = self.term()?;
        self.postfix(term)
    }

    fn postfix(&mut self, mut node: Node) -> Result<Node, Error> {
        loop {
            if self.eat_sym(".") {
                let name = match self.next().tok {
                    Tok::Ident { name, .. } => name,
                    _ => {
                        self.at -= 1;
                        return Err(self.error("expected a name after '.'"));
                    }
                };
                node = if self.eat_sym("(") {
                    self.call(Some(Box::new(node)), &name)?
                } else {
                    Node::Member(Some(Box::new(node)), name)
                };
            } else if self.eat_sym("[") {
                let index = self.expr(0)?;
                self.expect_sym("]")?;
                node = Node::Indexer(Box::new(node), Box::new(index));
            } else {
                return Ok(node);
            }
        }
    }

    fn term(&mut self) -> Result<Node, Error> {
        let token = self.next();
        match token.tok {
            Tok::Str(s) => Ok(Node::Literal(Value::String(s), "String")),
            Tok::Num(n) => self.number(&n, token.pos),
            Tok::Temporal(s) => temporal_literal(&s, token.pos),
            Tok::External(name) => Ok(Node::External(name)),
            Tok::Special(s) => Ok(match s.as_str() {
                "this" => Node::This,
                "index" => Node::Index,
                _ => Node::Total,
            }),
            Tok::Sym("(") => {
                let inner = self.expr(0)?;
                self.expect_sym(")")?;
                Ok(inner)
            }
            Tok::Sym("{") => {
                self.expect_sym("}")?;
                Ok(Node::Empty)
            }
            Tok::Ident { name, quoted } => {
                if !quoted && (name == "true" || name == "false") {
                    return Ok(Node::Literal(Value::Bool(name == "true"), "Boolean"));
                }
                if self.eat_sym("(") {
                    return self.call(None, &name);
                }
                Ok(Node::Member(None, name))
            }
            _ => {
                self.at -= 1;
                Err(self.error("expected an expression"))
            }
        }
    }

    /// A number, possibly followed by a unit making it a quantity (`5 'mg'`, `3 days`).
    fn number(&mut self, text: &str, pos: usize) -> Result<Node, Error> {
        let number = Number::from_str(text)
            .map_err(|_| Error(format!("invalid number '{text}' at position {pos}")))?;
        let is_decimal = text.contains('.');
        let unit = match &self.peek().tok {
            Tok::Str(u) => Some(u.clone()),
            Tok::Ident {
                name,
                quoted: false,
            } if CALENDAR_UNITS.contains(&name.as_str()) => Some(name.clone()),
            _ => None,
        };
        if let Some(unit) = unit {
            self.next();
            let mut q = serde_json::Map::new();
            q.insert("value".into(), Value::Number(number));
            q.insert("unit".into(), Value::String(unit.clone()));
            if !CALENDAR_UNITS.contains(&unit.as_str()) {
                q.insert("system".into(), Value::String(crate::UCUM.into()));
                q.insert("code".into(), Value::String(unit));
            }
            return Ok(Node::Literal(Value::Object(q), "Quantity"));
        }
        let ty = if is_decimal { "Decimal" } else { "Integer" };
        Ok(Node::Literal(Value::Number(number), ty))
    }

    fn call(&mut self, target: Option<Box<Node>>, name: &str) -> Result<Node, Error> {
        let pos = self.tokens[self.at.saturating_sub(2)].pos;
        let Some((func, min, max)) = Func::lookup(name) else {
            return Err(Error(format!(
                "unknown function '{name}' at position {pos}"
            )));
        };
        let mut args = Vec::new();
        if !self.eat_sym(")") {
            loop {
                args.push(self.expr(0)?);
                if self.eat_sym(")") {
                    break;
                }
                if !self.eat_sym(",") {
                    return Err(self.error("expected ',' or ')'"));
                }
            }
        }
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                min.to_string()
            } else {
                format!("{min} to {max}")
            };
            return Err(Error(format!(
                "function '{name}' takes {expected} argument(s), got {} at position {pos}",
                args.len()
            )));
        }
        if matches!(func, Func::OfType | Func::Is | Func::As) {
            let spec = node_to_type(&args[0]).ok_or_else(|| {
                Error(format!(
                    "'{name}' expects a type name argument at position {pos}"
                ))
            })?;
            args[0] = Node::Type(spec);
        }
        Ok(Node::Call(target, func, args))
    }
}

/// Reads `Quantity` or `FHIR.Quantity` parsed as an ordinary expression back as a type name.
fn node_to_type(node: &Node) -> Option<TypeSpec> {
    match node {
        Node::Member(None, name) => Some(TypeSpec {
            namespace: None,
            name: name.clone(),
        }),
        Node::Member(Some(target), name) => match target.as_ref() {
            Node::Member(None, ns) => Some(TypeSpec {
                namespace: Some(ns.clone()),
                name: name.clone(),
            }),
            _ => None,
        },
        _ => None,
    }
}

fn negate(n: &Number) -> Number {
    let s = n.to_string();
    let neg = match s.strip_prefix('-') {
        Some(rest) => rest.to_owned(),
        None => format!("-{s}"),
    };
    Number::from_str(&neg).unwrap_or_else(|_| n.clone())
}

fn temporal_literal(text: &str, pos: usize) -> Result<Node, Error> {
    let parsed = Temporal::parse_literal(text).ok_or_else(|| {
        Error(format!(
            "invalid date/time literal '@{text}' at position {pos}"
        ))
    })?;
    let ty = match parsed.kind {
        TemporalKind::Date => "Date",
        TemporalKind::DateTime => "DateTime",
        TemporalKind::Time => "Time",
    };
    // A trailing `T` (`@2020-01-01T`) marks a DateTime of date precision; the stored text
    // drops it (and the leading `T` of times) to look like FHIR JSON values.
    let value = text.trim_end_matches('T');
    let value = value.strip_prefix('T').unwrap_or(value);
    Ok(Node::Literal(Value::String(value.to_owned()), ty))
}
