//! A small regular-expression engine for `matches()` and `replaceMatches()`.
//!
//! It exists so the crate needs no dependency beyond serde_json/thiserror. Supported: literals,
//! `.`, classes (`[a-z]`, `[^...]`, `\d \w \s` and negations), groups (capturing and `(?:`),
//! alternation, `* + ? {n} {n,} {n,m}` (greedy and lazy), `^ $ \b \B`. Matching is
//! backtracking with a memo of failed (instruction, position) states, so time is bounded by
//! program size × text length: no catastrophic backtracking.

use crate::Error;

/// Instruction budget: `{n,m}` expands its operand, so nested counters could explode.
const MAX_PROGRAM: usize = 20_000;
/// Memo budget (bits) for program size × text length.
const MAX_MEMO: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
enum Ast {
    Empty,
    Char(char),
    Any,
    Class(Class),
    Start,
    End,
    WordBoundary(bool),
    Group(Box<Ast>, Option<usize>),
    Concat(Vec<Ast>),
    Alt(Vec<Ast>),
    Repeat {
        node: Box<Ast>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
    },
}

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    items: Vec<ClassItem>,
}

#[derive(Debug, Clone)]
enum ClassItem {
    Range(char, char),
    Digit(bool),
    Word(bool),
    Space(bool),
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let hit = self.items.iter().any(|item| match *item {
            ClassItem::Range(lo, hi) => lo <= c && c <= hi,
            ClassItem::Digit(neg) => c.is_ascii_digit() != neg,
            ClassItem::Word(neg) => is_word(c) != neg,
            ClassItem::Space(neg) => c.is_whitespace() != neg,
        });
        hit != self.negated
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[derive(Debug, Clone)]
enum Inst {
    Char(char),
    Any,
    Class(usize),
    Start,
    End,
    WordBoundary(bool),
    Split(usize, usize),
    Jmp(usize),
    Save(usize),
    Match,
}

/// A compiled regular expression.
#[derive(Debug, Clone)]
pub(crate) struct Regex {
    prog: Vec<Inst>,
    classes: Vec<Class>,
    groups: usize,
}

impl Regex {
    pub fn new(pattern: &str) -> Result<Regex, Error> {
        let mut p = RegexParser {
            chars: pattern.chars().collect(),
            at: 0,
            groups: 0,
        };
        let ast = p.alternation()?;
        if p.at < p.chars.len() {
            return Err(p.error("unbalanced ')'"));
        }
        let mut c = Compiler {
            prog: Vec::new(),
            classes: Vec::new(),
        };
        c.prog.push(Inst::Save(0));
        c.emit(&ast)?;
        c.prog.push(Inst::Save(1));
        c.prog.push(Inst::Match);
        Ok(Regex {
            prog: c.prog,
            classes: c.classes,
            groups: p.groups,
        })
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> Result<bool, Error> {
        let chars: Vec<char> = text.chars().collect();
        Ok(Matcher::new(self, &chars)?.find(0).is_some())
    }

    /// Replaces every non-overlapping match; `$n` in `replacement` inserts group `n`.
    pub fn replace_all(&self, text: &str, replacement: &str) -> Result<String, Error> {
        let chars: Vec<char> = text.chars().collect();
        let mut m = Matcher::new(self, &chars)?;
        let mut out = String::new();
        let mut from = 0;
        while from <= chars.len() {
            let Some(slots) = m.find(from) else { break };
            let (start, end) = (slots[0].unwrap_or(from), slots[1].unwrap_or(from));
            out.extend(&chars[from..start]);
            expand(replacement, &slots, &chars, &mut out);
            if end == start {
                // An empty match: copy one character so the scan moves on.
                if let Some(c) = chars.get(end) {
                    out.push(*c);
                }
                from = end + 1;
            } else {
                from = end;
            }
        }
        if from < chars.len() {
            out.extend(&chars[from..]);
        }
        Ok(out)
    }
}

fn expand(replacement: &str, slots: &[Option<usize>], text: &[char], out: &mut String) {
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            if let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                chars.next();
                let g = d as usize;
                if let (Some(Some(s)), Some(Some(e))) = (slots.get(2 * g), slots.get(2 * g + 1)) {
                    if s <= e {
                        out.extend(&text[*s..*e]);
                    }
                }
                continue;
            }
        }
        out.push(c);
    }
}

struct RegexParser {
    chars: Vec<char>,
    at: usize,
    groups: usize,
}

impl RegexParser {
    fn error(&self, msg: &str) -> Error {
        Error(format!("invalid regular expression: {msg} at {}", self.at))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn alternation(&mut self) -> Result<Ast, Error> {
        let mut alts = vec![self.concat()?];
        while self.peek() == Some('|') {
            self.at += 1;
            alts.push(self.concat()?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Ast::Empty)
        } else {
            Ast::Alt(alts)
        })
    }

    fn concat(&mut self) -> Result<Ast, Error> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantifier(atom)?);
        }
        Ok(Ast::Concat(items))
    }

    fn quantifier(&mut self, atom: Ast) -> Result<Ast, Error> {
        let (min, max) = match self.peek() {
            Some('{') => match self.counted() {
                Some(bounds) => bounds,
                None => return Ok(atom),
            },
            Some(c @ ('*' | '+' | '?')) => {
                self.at += 1;
                match c {
                    '*' => (0, None),
                    '+' => (1, None),
                    _ => (0, Some(1)),
                }
            }
            _ => return Ok(atom),
        };
        if matches!(atom, Ast::Start | Ast::End | Ast::WordBoundary(_)) {
            return Err(self.error("quantifier on an anchor"));
        }
        let greedy = if self.peek() == Some('?') {
            self.at += 1;
            false
        } else {
            true
        };
        Ok(Ast::Repeat {
            node: Box::new(atom),
            min,
            max,
            greedy,
        })
    }

    /// Parses `{n}`, `{n,}`, `{n,m}` at the cursor and moves past it; `None` (cursor
    /// unchanged) when the brace does not start a valid counter and is a literal.
    fn counted(&mut self) -> Option<(u32, Option<u32>)> {
        let rest: String = self.chars[self.at..].iter().collect();
        let close = rest.find('}')?;
        let body = &rest[1..close];
        let (min, max) = match body.split_once(',') {
            Some((a, "")) => (a.parse().ok()?, None),
            Some((a, b)) => (a.parse().ok()?, Some(b.parse().ok()?)),
            None => {
                let n = body.parse().ok()?;
                (n, Some(n))
            }
        };
        if max.is_some_and(|m| m < min) {
            return None;
        }
        self.at += rest[..=close].chars().count();
        Some((min, max))
    }

    fn atom(&mut self) -> Result<Ast, Error> {
        let c = self.peek().ok_or_else(|| self.error("unexpected end"))?;
        self.at += 1;
        Ok(match c {
            '.' => Ast::Any,
            '^' => Ast::Start,
            '$' => Ast::End,
            '(' => {
                let index = if self.chars[self.at..].starts_with(&['?', ':']) {
                    self.at += 2;
                    None
                } else {
                    self.groups += 1;
                    Some(self.groups)
                };
                let inner = self.alternation()?;
                if self.peek() != Some(')') {
                    return Err(self.error("missing ')'"));
                }
                self.at += 1;
                Ast::Group(Box::new(inner), index)
            }
            '[' => Ast::Class(self.class()?),
            '\\' => self.escape(false)?,
            '*' | '+' | '?' => return Err(self.error("nothing to repeat")),
            other => Ast::Char(other),
        })
    }

    /// An escape after `\`; inside a class, `\b` is a backspace rather than a boundary.
    fn escape(&mut self, in_class: bool) -> Result<Ast, Error> {
        let c = self
            .peek()
            .ok_or_else(|| self.error("trailing backslash"))?;
        self.at += 1;
        let class = |item| {
            Ast::Class(Class {
                negated: false,
                items: vec![item],
            })
        };
        Ok(match c {
            'd' => class(ClassItem::Digit(false)),
            'D' => class(ClassItem::Digit(true)),
            'w' => class(ClassItem::Word(false)),
            'W' => class(ClassItem::Word(true)),
            's' => class(ClassItem::Space(false)),
            'S' => class(ClassItem::Space(true)),
            'b' if in_class => Ast::Char('\u{8}'),
            'b' => Ast::WordBoundary(true),
            'B' => Ast::WordBoundary(false),
            'n' => Ast::Char('\n'),
            'r' => Ast::Char('\r'),
            't' => Ast::Char('\t'),
            'f' => Ast::Char('\u{c}'),
            'v' => Ast::Char('\u{b}'),
            '0' => Ast::Char('\0'),
            'u' | 'x' => {
                let width = if c == 'u' { 4 } else { 2 };
                let hex: String = self.chars[self.at..].iter().take(width).collect();
                let ch = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == width)
                    .and_then(char::from_u32)
                    .ok_or_else(|| self.error("bad hex escape"))?;
                self.at += width;
                Ast::Char(ch)
            }
            other => Ast::Char(other),
        })
    }

    fn class(&mut self) -> Result<Class, Error> {
        let negated = self.peek() == Some('^');
        if negated {
            self.at += 1;
        }
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let c = self.peek().ok_or_else(|| self.error("missing ']'"))?;
            if c == ']' && !first {
                self.at += 1;
                break;
            }
            first = false;
            self.at += 1;
            let lo = if c == '\\' {
                match self.escape(true)? {
                    Ast::Char(ch) => ch,
                    Ast::Class(inner) => {
                        items.extend(inner.items);
                        continue;
                    }
                    _ => return Err(self.error("bad escape in class")),
                }
            } else {
                c
            };
            // A range, unless the '-' is the last character before ']'.
            if self.peek() == Some('-') && self.chars.get(self.at + 1).is_some_and(|n| *n != ']') {
                self.at += 1;
                let hc = self.peek().ok_or_else(|| self.error("missing ']'"))?;
                self.at += 1;
                let hi = if hc == '\\' {
                    match self.escape(true)? {
                        Ast::Char(ch) => ch,
                        _ => return Err(self.error("bad range end")),
                    }
                } else {
                    hc
                };
                if hi < lo {
                    return Err(self.error("reversed range"));
                }
                items.push(ClassItem::Range(lo, hi));
            } else {
                items.push(ClassItem::Range(lo, lo));
            }
        }
        Ok(Class { negated, items })
    }
}

struct Compiler {
    prog: Vec<Inst>,
    classes: Vec<Class>,
}

impl Compiler {
    fn push(&mut self, inst: Inst) -> Result<usize, Error> {
        if self.prog.len() >= MAX_PROGRAM {
            return Err(Error("regular expression too complex".into()));
        }
        self.prog.push(inst);
        Ok(self.prog.len() - 1)
    }

    fn emit(&mut self, ast: &Ast) -> Result<(), Error> {
        match ast {
            Ast::Empty => {}
            Ast::Char(c) => {
                self.push(Inst::Char(*c))?;
            }
            Ast::Any => {
                self.push(Inst::Any)?;
            }
            Ast::Class(class) => {
                self.classes.push(class.clone());
                self.push(Inst::Class(self.classes.len() - 1))?;
            }
            Ast::Start => {
                self.push(Inst::Start)?;
            }
            Ast::End => {
                self.push(Inst::End)?;
            }
            Ast::WordBoundary(b) => {
                self.push(Inst::WordBoundary(*b))?;
            }
            Ast::Group(inner, index) => {
                if let Some(i) = index {
                    self.push(Inst::Save(2 * i))?;
                }
                self.emit(inner)?;
                if let Some(i) = index {
                    self.push(Inst::Save(2 * i + 1))?;
                }
            }
            Ast::Concat(items) => {
                for item in items {
                    self.emit(item)?;
                }
            }
            Ast::Alt(alts) => {
                let mut jumps = Vec::new();
                for (i, alt) in alts.iter().enumerate() {
                    if i + 1 < alts.len() {
                        let split = self.push(Inst::Split(0, 0))?;
                        self.emit(alt)?;
                        jumps.push(self.push(Inst::Jmp(0))?);
                        let next = self.prog.len();
                        self.prog[split] = Inst::Split(split + 1, next);
                    } else {
                        self.emit(alt)?;
                    }
                }
                let end = self.prog.len();
                for j in jumps {
                    self.prog[j] = Inst::Jmp(end);
                }
            }
            Ast::Repeat {
                node,
                min,
                max,
                greedy,
            } => {
                for _ in 0..*min {
                    self.emit(node)?;
                }
                match max {
                    None => {
                        let split = self.push(Inst::Split(0, 0))?;
                        self.emit(node)?;
                        self.push(Inst::Jmp(split))?;
                        let out = self.prog.len();
                        self.prog[split] = self.split(*greedy, split + 1, out);
                    }
                    Some(max) => {
                        let mut splits = Vec::new();
                        for _ in *min..*max {
                            splits.push(self.push(Inst::Split(0, 0))?);
                            self.emit(node)?;
                        }
                        let out = self.prog.len();
                        for s in splits {
                            self.prog[s] = self.split(*greedy, s + 1, out);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn split(&self, greedy: bool, body: usize, out: usize) -> Inst {
        if greedy {
            Inst::Split(body, out)
        } else {
            Inst::Split(out, body)
        }
    }
}

enum Frame {
    Try(usize, usize),
    Restore(usize, Option<usize>),
}

struct Matcher<'r, 't> {
    re: &'r Regex,
    text: &'t [char],
    /// Failed (pc, position) states; valid across start positions because success from a
    /// state never depends on how it was reached (no back-references).
    visited: Vec<u64>,
}

impl<'r, 't> Matcher<'r, 't> {
    fn new(re: &'r Regex, text: &'t [char]) -> Result<Self, Error> {
        let bits = re.prog.len() * (text.len() + 1);
        if bits > MAX_MEMO {
            return Err(Error("regular expression input too long".into()));
        }
        Ok(Matcher {
            re,
            text,
            visited: vec![0; bits.div_ceil(64)],
        })
    }

    fn find(&mut self, from: usize) -> Option<Vec<Option<usize>>> {
        let found = (from..=self.text.len()).find_map(|start| self.run(start));
        if found.is_some() {
            // A successful run leaves states marked that did not fail.
            self.visited.fill(0);
        }
        found
    }

    fn run(&mut self, start: usize) -> Option<Vec<Option<usize>>> {
        let mut slots = vec![None; 2 * (self.re.groups + 1)];
        let mut stack = vec![Frame::Try(0, start)];
        let width = self.text.len() + 1;
        while let Some(frame) = stack.pop() {
            let (mut pc, mut pos) = match frame {
                Frame::Restore(slot, old) => {
                    slots[slot] = old;
                    continue;
                }
                Frame::Try(pc, pos) => (pc, pos),
            };
            loop {
                let bit = pc * width + pos;
                if self.visited[bit / 64] & (1 << (bit % 64)) != 0 {
                    break;
                }
                self.visited[bit / 64] |= 1 << (bit % 64);
                let here = self.text.get(pos).copied();
                match &self.re.prog[pc] {
                    Inst::Char(c) if here == Some(*c) => {
                        pc += 1;
                        pos += 1;
                    }
                    Inst::Any if here.is_some() => {
                        pc += 1;
                        pos += 1;
                    }
                    Inst::Class(i) if here.is_some_and(|c| self.re.classes[*i].matches(c)) => {
                        pc += 1;
                        pos += 1;
                    }
                    Inst::Start if pos == 0 => pc += 1,
                    Inst::End if pos == self.text.len() => pc += 1,
                    Inst::WordBoundary(want) => {
                        let before = pos > 0 && is_word(self.text[pos - 1]);
                        let after = here.is_some_and(is_word);
                        if (before != after) != *want {
                            break;
                        }
                        pc += 1;
                    }
                    Inst::Split(a, b) => {
                        stack.push(Frame::Try(*b, pos));
                        pc = *a;
                    }
                    Inst::Jmp(t) => pc = *t,
                    Inst::Save(slot) => {
                        stack.push(Frame::Restore(*slot, slots[*slot]));
                        slots[*slot] = Some(pos);
                        pc += 1;
                    }
                    Inst::Match => return Some(slots),
                    _ => break,
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Regex::new(p).unwrap().is_match(t).unwrap()
    }

    #[test]
    fn matches_common_fhir_patterns() {
        assert!(m("^[A-Za-z0-9\\-\\.]{1,64}$", "abc-1.2"));
        assert!(!m("^[A-Za-z0-9\\-\\.]{1,64}$", "abc_1"));
        assert!(!m("^[A-Za-z0-9\\-\\.]{1,64}$", &"a".repeat(65)));
        assert!(m("^[A-Z]([A-Za-z0-9_]){0,254}$", "Patient_1"));
        assert!(!m("^[A-Z]([A-Za-z0-9_]){0,254}$", "patient"));
        assert!(m("a|b", "xxb"));
        assert!(m("^(ab)+$", "ababab"));
        assert!(!m("^(ab)+$", "ababa"));
        assert!(m("\\d{3}-\\d{4}", "call 555-1234 now"));
        assert!(m("^\\s*$", "   "));
        assert!(m("[^\\s\\.,:;]{1,64}", "abc"));
        assert!(m("\\bcat\\b", "a cat sat"));
        assert!(!m("\\bcat\\b", "concatenate"));
        assert!(m("^x{2,}$", "xxx"));
        assert!(m("a{,", "a{,"));
        assert!(m("^.*$", "line1\nline2"));
    }

    #[test]
    fn survives_pathological_patterns() {
        let text = format!("{}b", "a".repeat(5000));
        assert!(!m("^(a+)+$", &text));
        assert!(!m("^(a|a)*c", &text));
    }

    #[test]
    fn replaces_with_groups() {
        let re = Regex::new("(\\w+)@(\\w+)").unwrap();
        assert_eq!(
            re.replace_all("a@b c@d", "$2 at $1").unwrap(),
            "b at a d at c"
        );
        let re = Regex::new("x*").unwrap();
        assert_eq!(re.replace_all("abc", "-").unwrap(), "-a-b-c-");
        let re = Regex::new("[aeiou]").unwrap();
        assert_eq!(re.replace_all("banana", "").unwrap(), "bnn");
    }

    #[test]
    fn rejects_bad_patterns() {
        for p in ["(", "[a", "*a", "a)", "[z-a]", "\\"] {
            assert!(Regex::new(p).is_err(), "{p}");
        }
    }
}
