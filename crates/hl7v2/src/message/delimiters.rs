//! The delimiter set a message declares in MSH-1 and MSH-2.

use crate::error::{ErrorCode, Hl7Error, Location};

/// The separators and escape character of one message (MSH-1 and MSH-2).
///
/// All delimiters are ASCII punctuation, which is what lets the parser split decoded text
/// byte-wise whatever the message charset: no ASCII byte occurs inside a multi-byte UTF-8
/// sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: char,
    /// Component separator, usually `^`.
    pub component: char,
    /// Repetition separator, usually `~`.
    pub repetition: char,
    /// Escape character, usually `\`; a message may declare none.
    pub escape: Option<char>,
    /// Subcomponent separator, usually `&`; a message may declare none.
    pub subcomponent: Option<char>,
    /// Truncation character of v2.7+, usually `#`.
    pub truncation: Option<char>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self {
            field: '|',
            component: '^',
            repetition: '~',
            escape: Some('\\'),
            subcomponent: Some('&'),
            truncation: None,
        }
    }
}

impl Delimiters {
    /// Reads the delimiters from the field separator and the encoding characters (MSH-2).
    pub fn from_msh(field: char, encoding: &str) -> Result<Self, Hl7Error> {
        let bad = |message: String| {
            Hl7Error::at(
                ErrorCode::DataTypeError,
                Location::field("MSH", 1, 2),
                message,
            )
        };
        if !is_delimiter_char(field) {
            return Err(Hl7Error::at(
                ErrorCode::DataTypeError,
                Location::field("MSH", 1, 1),
                format!("field separator {field:?} must be an ASCII punctuation character"),
            ));
        }
        let chars: Vec<char> = encoding.chars().collect();
        if !(2..=5).contains(&chars.len()) {
            return Err(bad(format!(
                "encoding characters {encoding:?} must be 2 to 5 characters (component, repetition, escape, subcomponent, truncation)"
            )));
        }
        let mut seen = vec![field];
        for &c in &chars {
            if !is_delimiter_char(c) {
                return Err(bad(format!(
                    "encoding character {c:?} must be an ASCII punctuation character"
                )));
            }
            if seen.contains(&c) {
                return Err(bad(format!("delimiter {c:?} is declared twice")));
            }
            seen.push(c);
        }
        Ok(Self {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars.get(2).copied(),
            subcomponent: chars.get(3).copied(),
            truncation: chars.get(4).copied(),
        })
    }

    /// The encoding characters as written in MSH-2.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        s.push(self.component);
        s.push(self.repetition);
        for c in [self.escape, self.subcomponent, self.truncation]
            .into_iter()
            .flatten()
        {
            s.push(c);
        }
        s
    }

    /// Whether `c` has a structural meaning in this delimiter set.
    pub(crate) fn is_special(&self, c: char) -> bool {
        c == self.field
            || c == self.component
            || c == self.repetition
            || Some(c) == self.escape
            || Some(c) == self.subcomponent
            || Some(c) == self.truncation
    }
}

fn is_delimiter_char(c: char) -> bool {
    c.is_ascii_punctuation()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_standard_and_v27_encoding_characters() {
        let d = Delimiters::from_msh('|', "^~\\&").unwrap();
        assert_eq!(d, Delimiters::default());
        let d = Delimiters::from_msh('|', "^~\\&#").unwrap();
        assert_eq!(d.truncation, Some('#'));
        assert_eq!(d.encoding_characters(), "^~\\&#");
    }

    #[test]
    fn rejects_duplicates_letters_and_wrong_lengths() {
        assert!(Delimiters::from_msh('|', "^^\\&").is_err());
        assert!(Delimiters::from_msh('|', "^|\\&").is_err());
        assert!(Delimiters::from_msh('A', "^~\\&").is_err());
        assert!(Delimiters::from_msh('|', "^").is_err());
        assert!(Delimiters::from_msh('|', "^~\\&#$").is_err());
        assert!(Delimiters::from_msh('|', "^~x&").is_err());
    }
}
