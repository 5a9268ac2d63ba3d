//! Tokenizer for FHIRPath source text.

use crate::Error;

/// A lexical token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier; `quoted` is true for backtick-delimited ones, which are never keywords.
    Ident {
        name: String,
        quoted: bool,
    },
    /// A string literal, escapes already resolved.
    Str(String),
    /// A numeric literal as written (integer or decimal).
    Num(String),
    /// A date/time literal without the leading `@`.
    Temporal(String),
    /// `%name`.
    External(String),
    /// `$this`, `$index`, `$total` (without the `$`).
    Special(String),
    /// Punctuation and symbolic operators.
    Sym(&'static str),
    Eof,
}

/// A token with the byte offset where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: usize,
}

/// Symbols, longest first so that `<=` wins over `<`.
const SYMBOLS: &[&str] = &[
    "!=", "!~", "<=", ">=", ".", ",", "(", ")", "[", "]", "{", "}", "+", "-", "*", "/", "&", "|",
    "=", "~", "<", ">",
];

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, Error> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(bytes.len(), |n| i + n);
            continue;
        }
        if src[i..].starts_with("/*") {
            match src[i + 2..].find("*/") {
                Some(n) => i = i + 2 + n + 2,
                None => return Err(err(i, "unterminated comment")),
            }
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_alphabetic() || c == b'_' {
            i = ident_end(bytes, i);
            Tok::Ident {
                name: src[start..i].to_owned(),
                quoted: false,
            }
        } else if c == b'`' {
            let (s, end) = delimited(src, i, '`')?;
            i = end;
            Tok::Ident {
                name: s,
                quoted: true,
            }
        } else if c == b'\'' {
            let (s, end) = delimited(src, i, '\'')?;
            i = end;
            Tok::Str(s)
        } else if c.is_ascii_digit() {
            i = digits_end(bytes, i);
            // Only a dot followed by a digit continues the number: `1.toString()` is a call.
            if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                i = digits_end(bytes, i + 1);
            }
            let text = src[start..i].to_owned();
            // Long literals (`1L`) are treated as plain integers.
            if i < bytes.len() && bytes[i] == b'L' && !is_ident_byte(bytes.get(i + 1)) {
                i += 1;
            }
            Tok::Num(text)
        } else if c == b'@' {
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || matches!(bytes[i], b'-' | b':' | b'.' | b'+'))
            {
                i += 1;
            }
            if i == start + 1 {
                return Err(err(start, "empty date/time literal after '@'"));
            }
            Tok::Temporal(src[start + 1..i].to_owned())
        } else if c == b'%' {
            i += 1;
            match bytes.get(i) {
                Some(b'`') => {
                    let (s, end) = delimited(src, i, '`')?;
                    i = end;
                    Tok::External(s)
                }
                Some(b'\'') => {
                    let (s, end) = delimited(src, i, '\'')?;
                    i = end;
                    Tok::External(s)
                }
                Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {
                    i = ident_end(bytes, i);
                    Tok::External(src[start + 1..i].to_owned())
                }
                _ => return Err(err(start, "expected a name after '%'")),
            }
        } else if c == b'$' {
            i = ident_end(bytes, i + 1);
            let name = &src[start + 1..i];
            if !matches!(name, "this" | "index" | "total") {
                return Err(err(start, &format!("unknown special variable '${name}'")));
            }
            Tok::Special(name.to_owned())
        } else if let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            i += sym.len();
            Tok::Sym(sym)
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(err(i, &format!("unexpected character '{ch}'")));
        };
        out.push(Token { tok, pos: start });
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: src.len(),
    });
    Ok(out)
}

fn err(pos: usize, msg: &str) -> Error {
    Error(format!("{msg} at position {pos}"))
}

fn is_ident_byte(b: Option<&u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn ident_end(bytes: &[u8], mut i: usize) -> usize {
    while is_ident_byte(bytes.get(i)) {
        i += 1;
    }
    i
}

fn digits_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// Reads a `quote`-delimited string starting at `start`, resolving escapes. Returns the text
/// and the offset just past the closing quote.
fn delimited(src: &str, start: usize, quote: char) -> Result<(String, usize), Error> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, ch)) = chars.next() {
        if ch == quote {
            return Ok((out, start + 1 + off + 1));
        }
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        let Some((eoff, esc)) = chars.next() else {
            break;
        };
        match esc {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .and_then(char::from_u32)
                    .ok_or_else(|| err(start + 1 + eoff, "invalid \\u escape"))?;
                out.push(code);
            }
            // FHIRPath escapes `\'`, `\"`, `` \` ``, `\\`, `\/`; others keep the character.
            other => out.push(other),
        }
    }
    Err(err(start, &format!("unterminated {quote}-quoted text")))
}
