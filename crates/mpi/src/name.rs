//! Person names as the matcher sees them: a family and a given part, each in Chinese
//! characters (when written so) and in Latin letters (pinyin for Chinese).

use serde::{Deserialize, Serialize};

use crate::text::{fold, is_common_surname_pinyin, is_han, pinyin, COMPOUND_SURNAMES};

/// One part of a name (family or given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamePart {
    /// Simplified Chinese characters, empty when the part was written in Latin letters.
    pub han: String,
    /// Latin form without spaces: toneless pinyin of `han`, or the folded Latin spelling.
    pub latin: String,
}

impl NamePart {
    fn from_han(han: &str, surname: bool) -> NamePart {
        NamePart {
            han: han.to_string(),
            latin: pinyin(han, surname),
        }
    }

    fn from_latin(tokens: &[&str]) -> NamePart {
        NamePart {
            han: String::new(),
            latin: tokens.concat(),
        }
    }

    /// Whether the part holds nothing.
    pub fn is_empty(&self) -> bool {
        self.latin.is_empty()
    }
}

/// A person's name split into family and given parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonName {
    /// Family name (姓).
    pub family: NamePart,
    /// Given names (名), joined.
    pub given: NamePart,
}

impl PersonName {
    /// Whether neither part holds anything.
    pub fn is_empty(&self) -> bool {
        self.family.is_empty() && self.given.is_empty()
    }

    /// From separate family and given strings (FHIR `HumanName.family`/`given`, a CSV row).
    /// Chinese characters and Latin letters are both accepted; traditional characters are
    /// folded to simplified.
    pub fn from_parts(family: &str, given: &[&str]) -> PersonName {
        let family = fold(family);
        let given: Vec<String> = given.iter().map(|g| fold(g)).collect();
        PersonName {
            family: part(&family, true),
            given: part(&given.join(" "), false),
        }
    }

    /// From free text (FHIR `HumanName.text`). Returns one name per script found: `张伟 Zhang
    /// Wei` gives the Chinese and the Latin reading. Chinese text splits after the surname
    /// (two characters for compound surnames such as 欧阳); Latin text is read family-first
    /// when the family name is in capitals (`ZHANG Wei`), before a comma (`Zhang, Wei`) or a
    /// common Chinese surname (`Zhang Wei`), and given-first otherwise (`John Smith`).
    pub fn from_text(text: &str) -> Vec<PersonName> {
        let mut out = Vec::new();
        let folded = fold(text);
        let han: String = folded.chars().filter(|&c| is_han(c)).collect();
        if !han.is_empty() {
            let cut = COMPOUND_SURNAMES
                .iter()
                .find(|s| han.starts_with(*s) && han.chars().count() > 2)
                .map_or_else(|| han.chars().next().map_or(0, char::len_utf8), |s| s.len());
            out.push(PersonName {
                family: NamePart::from_han(&han[..cut], true),
                given: NamePart::from_han(&han[cut..], false),
            });
        }
        let latin_tokens: Vec<&str> = folded
            .split(' ')
            .filter(|t| !t.is_empty() && !t.chars().any(is_han))
            .collect();
        if latin_tokens.is_empty() {
            return out;
        }
        let family_index = latin_family_index(text, &latin_tokens);
        let (family, given): (Vec<&str>, Vec<&str>) = match family_index {
            Some((start, end)) => {
                let family = latin_tokens[start..end].to_vec();
                let given = latin_tokens[..start]
                    .iter()
                    .chain(&latin_tokens[end..])
                    .copied()
                    .collect();
                (family, given)
            }
            None => (
                latin_tokens[latin_tokens.len() - 1..].to_vec(),
                latin_tokens[..latin_tokens.len() - 1].to_vec(),
            ),
        };
        out.push(PersonName {
            family: NamePart::from_latin(&family),
            given: NamePart::from_latin(&given),
        });
        out
    }
}

/// Where the family name sits among the folded Latin tokens of `raw`.
fn latin_family_index(raw: &str, tokens: &[&str]) -> Option<(usize, usize)> {
    if tokens.len() == 1 {
        return Some((0, 1));
    }
    if let Some((before, _)) = raw.split_once(',') {
        let n = fold(before).split(' ').filter(|t| !t.is_empty()).count();
        if n > 0 && n < tokens.len() {
            return Some((0, n));
        }
    }
    // Raw words (same order as the folded tokens for Latin text) written in capitals.
    let raw_words: Vec<&str> = raw
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !w.chars().any(is_han))
        .collect();
    if raw_words.len() == tokens.len() {
        let caps: Vec<bool> = raw_words
            .iter()
            .map(|w| w.chars().count() > 1 && w.chars().all(|c| !c.is_lowercase()))
            .collect();
        if caps.iter().any(|&c| c) && !caps.iter().all(|&c| c) {
            let start = caps.iter().position(|&c| c).unwrap_or(0);
            let end = start + caps[start..].iter().take_while(|&&c| c).count();
            return Some((start, end));
        }
    }
    if is_common_surname_pinyin(tokens[0]) {
        return Some((0, 1));
    }
    None
}

/// A name part from folded text: Chinese characters if it has any, Latin letters otherwise.
fn part(folded: &str, surname: bool) -> NamePart {
    let han: String = folded.chars().filter(|&c| is_han(c)).collect();
    if !han.is_empty() {
        return NamePart::from_han(&han, surname);
    }
    let tokens: Vec<&str> = folded.split(' ').filter(|t| !t.is_empty()).collect();
    NamePart::from_latin(&tokens)
}
