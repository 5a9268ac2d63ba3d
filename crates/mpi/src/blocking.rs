//! Blocking keys: which stored records are worth comparing with a query record.
//!
//! Several independent passes, so that a pair is found when *any* of them agrees, and each
//! key is hashed to 64 bits (no key strings are kept). A pair is missed only when every pass
//! disagrees: e.g. names, birth date, identifiers, phone and address all corrupted at once.

use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;

use crate::record::MatchRecord;
use crate::text::soundex;

/// A hashed blocking key.
pub type Key = u64;

#[derive(Hash)]
enum Pass<'a> {
    /// Any identifier (system + value).
    Identifier(&'a str, &'a str),
    /// Full birth date.
    BirthDate(u16, u8, u8),
    /// Both name parts, order-free (swapped family/given still meet).
    FullName(&'a str, &'a str),
    /// Soundex of both name parts, order-free, + birth year (spelling variants that keep
    /// the sound of each part; a wrong day or month of birth).
    NameSoundYear(&'a str, &'a str, u16),
    /// Phone, last 8 digits.
    Phone(&'a str),
    /// Postcode + soundex of one name part.
    PostcodeName(&'a str, &'a str),
    /// Street + locality text (same household address).
    Street(&'a str, &'a str),
}

fn hash(pass: &Pass<'_>) -> Key {
    let mut h = FxHasher::default();
    pass.hash(&mut h);
    h.finish()
}

/// The blocking keys of `record`, deduplicated.
pub fn keys(record: &MatchRecord) -> Vec<Key> {
    let mut keys = Vec::with_capacity(16);
    for id in &record.identifiers {
        keys.push(hash(&Pass::Identifier(&id.system, &id.value)));
    }
    let year = record.birth_date.map(|b| b.year);
    if let Some(b) = record.birth_date.filter(|b| b.is_full()) {
        keys.push(hash(&Pass::BirthDate(b.year, b.month, b.day)));
    }
    let postcodes: Vec<&str> = record
        .addresses
        .iter()
        .map(|a| a.postcode.as_str())
        .filter(|p| !p.is_empty())
        .collect();
    for name in &record.names {
        let (f, g) = (name.family.latin.as_str(), name.given.latin.as_str());
        if !f.is_empty() && !g.is_empty() {
            let (x, y) = if f <= g { (f, g) } else { (g, f) };
            keys.push(hash(&Pass::FullName(x, y)));
        }
        let sounds = [soundex(f), soundex(g)];
        if let (Some(y), [fs, gs]) = (year, &sounds) {
            if !fs.is_empty() && !gs.is_empty() {
                // Both parts' sounds with the birth year: a typo in one part is caught by
                // the other passes (full name, birth date), and the block stays small even
                // where a few surnames cover most of the population.
                let (x, z) = if fs <= gs { (fs, gs) } else { (gs, fs) };
                keys.push(hash(&Pass::NameSoundYear(x, z, y)));
            }
        }
        for sound in sounds.iter().filter(|s| !s.is_empty()) {
            for p in &postcodes {
                keys.push(hash(&Pass::PostcodeName(p, sound)));
            }
        }
    }
    for p in &record.phones {
        keys.push(hash(&Pass::Phone(&p[p.len().saturating_sub(8)..])));
    }
    for a in &record.addresses {
        if !a.street.is_empty() && !a.locality.is_empty() {
            keys.push(hash(&Pass::Street(&a.street, &a.locality)));
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}
