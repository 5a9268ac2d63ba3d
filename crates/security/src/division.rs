//! GB/T 2260 administrative division codes (行政区划代码).
//!
//! A code is six digits `PPCCXX`: `PP` the province-level division, `CC` the prefecture-level
//! division (city, league, autonomous prefecture) within it, `XX` the county-level division
//! (district, county, county-level city, banner). So:
//!
//! - `PP0000` is a province (`110000` 北京市, `440000` 广东省),
//! - `PPCC00` a prefecture (`440300` 深圳市),
//! - `PPCCXX` a county (`440305` 南山区).
//!
//! Containment follows from the digits alone — a province contains every code with its first two
//! digits, a prefecture every code with its first four — which is what [`contains`] checks, so it
//! also works for codes newer than the embedded list. The list matters where the digits mislead:
//! the districts of the four municipalities hang directly under the province (`110101` 东城区's
//! parent is `110000`; there is no `110100` in the list), and so do the "directly administered
//! county-level divisions" (`429004` 仙桃市 under the placeholder `429000`). [`parent`] and
//! [`name`] consult the embedded list (civil-affairs list of 2021-01-04; see
//! `data/LICENSE-gbt2260.md`), loaded and decompressed on first use.
//!
//! phip uses these codes for the `division` claim of a user's token and for the region of each
//! institution: a user of county `440305` sees records held in `440305`; a user of city `440300`
//! those of every county in Shenzhen.

use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read as _;
use std::sync::OnceLock;

/// The level of a division.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Province-level (省/自治区/直辖市/特别行政区), `PP0000`.
    Province,
    /// Prefecture-level (地级市/地区/自治州/盟), `PPCC00`.
    Prefecture,
    /// County-level (区/县/县级市/旗), `PPCCXX`.
    County,
}

/// One entry of the embedded list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Division {
    /// Six-digit code.
    pub code: String,
    /// Official Chinese name.
    pub name: String,
    /// Level.
    pub level: Level,
    /// Parent code (`None` for provinces).
    pub parent: Option<String>,
}

struct Table {
    by_code: HashMap<String, Division>,
}

static GZ: &[u8] = include_bytes!("../data/gbt2260.json.gz");

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        // The data is compiled in and covered by tests, so failure here is a build defect; fall
        // back to an empty table (structural functions keep working) rather than panic.
        let mut json = Vec::new();
        let list: Vec<Division> = flate2::read::GzDecoder::new(GZ)
            .read_to_end(&mut json)
            .ok()
            .and_then(|_| serde_json::from_slice(&json).ok())
            .unwrap_or_default();
        Table {
            by_code: list.into_iter().map(|d| (d.code.clone(), d)).collect(),
        }
    })
}

/// Whether `code` has the shape of a division code: six ASCII digits with a non-zero province
/// part, and no county digits under a zero prefecture part (`110001` is not a code).
pub fn is_valid_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 6
        && b.iter().all(u8::is_ascii_digit)
        && &b[0..2] != b"00"
        && !(&b[2..4] == b"00" && &b[4..6] != b"00")
}

/// The level implied by the digits (`None` if the code is malformed).
pub fn level(code: &str) -> Option<Level> {
    if !is_valid_code(code) {
        return None;
    }
    Some(if code.ends_with("0000") {
        Level::Province
    } else if code.ends_with("00") {
        Level::Prefecture
    } else {
        Level::County
    })
}

/// The parent division: from the embedded list when the code is in it (so municipal districts
/// get their province), otherwise from the digits. `None` for provinces and malformed codes.
pub fn parent(code: &str) -> Option<String> {
    if let Some(d) = table().by_code.get(code) {
        return d.parent.clone();
    }
    match level(code)? {
        Level::Province => None,
        Level::Prefecture => Some(format!("{}0000", &code[..2])),
        Level::County => Some(format!("{}00", &code[..4])),
    }
}

/// The chain of ancestors, nearest first (`440305` → `["440300", "440000"]`).
pub fn ancestors(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = code.to_string();
    // At most two steps up in a three-level hierarchy; the bound guards against a cyclic list.
    while let Some(p) = parent(&cur) {
        if out.len() >= 3 {
            break;
        }
        out.push(p.clone());
        cur = p;
    }
    out
}

/// Whether division `ancestor` contains division `code` (a division contains itself). Decided by
/// the digits, so it is total and cheap; malformed codes contain nothing and are contained in
/// nothing.
pub fn contains(ancestor: &str, code: &str) -> bool {
    if !is_valid_code(code) {
        return false;
    }
    match level(ancestor) {
        None => false,
        Some(Level::Province) => ancestor[..2] == code[..2],
        Some(Level::Prefecture) => ancestor[..4] == code[..4],
        Some(Level::County) => ancestor == code,
    }
}

/// The official name of a listed division.
pub fn name(code: &str) -> Option<&'static str> {
    table().by_code.get(code).map(|d| d.name.as_str())
}

/// The full entry of a listed division.
pub fn get(code: &str) -> Option<&'static Division> {
    table().by_code.get(code)
}

/// Whether `code` is in the embedded list (a current, official division).
pub fn is_known(code: &str) -> bool {
    table().by_code.contains_key(code)
}

/// Number of divisions in the embedded list.
pub fn count() -> usize {
    table().by_code.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_list_loads() {
        assert_eq!(count(), 3656);
        assert_eq!(name("110000"), Some("北京市"));
        assert_eq!(name("440300"), Some("深圳市"));
        assert_eq!(name("440305"), Some("南山区"));
        assert_eq!(get("440305").unwrap().level, Level::County);
        assert_eq!(name("999999"), None);
        let levels = |l| table().by_code.values().filter(|d| d.level == l).count();
        assert_eq!(levels(Level::Province), 34);
        assert_eq!(levels(Level::Prefecture), 337);
        assert_eq!(levels(Level::County), 3285);
        // Every listed entry is consistent with the digit rules.
        for d in table().by_code.values() {
            assert_eq!(level(&d.code), Some(d.level), "{}", d.code);
            if let Some(p) = &d.parent {
                assert!(contains(p, &d.code), "{p} ⊇ {}", d.code);
                assert!(is_known(p));
            }
        }
    }

    #[test]
    fn levels_and_validity() {
        assert_eq!(level("440000"), Some(Level::Province));
        assert_eq!(level("440300"), Some(Level::Prefecture));
        assert_eq!(level("440305"), Some(Level::County));
        for bad in [
            "",
            "44030",
            "4403051",
            "44a305",
            "000000",
            "001234",
            "440001",
            "４４０３０５",
        ] {
            assert!(!is_valid_code(bad), "{bad}");
            assert_eq!(level(bad), None);
        }
    }

    #[test]
    fn parents_and_ancestors() {
        assert_eq!(parent("440305").as_deref(), Some("440300"));
        assert_eq!(parent("440300").as_deref(), Some("440000"));
        assert_eq!(parent("440000"), None);
        // Municipal districts: straight to the province, per the list.
        assert_eq!(parent("110101").as_deref(), Some("110000"));
        // Directly administered county-level city.
        assert_eq!(parent("429004").as_deref(), Some("429000"));
        // Unlisted but well-formed: by the digits.
        assert_eq!(parent("440399").as_deref(), Some("440300"));
        assert_eq!(ancestors("440305"), vec!["440300", "440000"]);
        assert_eq!(ancestors("110101"), vec!["110000"]);
        assert!(ancestors("440000").is_empty());
        assert!(ancestors("bad").is_empty());
    }

    #[test]
    fn containment() {
        let yes = [
            ("440000", "440305"),
            ("440300", "440305"),
            ("440305", "440305"),
            ("440000", "440300"),
            ("440000", "440000"),
            ("110000", "110101"),
            ("420000", "429004"),
        ];
        let no = [
            ("440305", "440300"), // child does not contain parent
            ("440300", "440000"),
            ("440300", "440105"), // Guangzhou district is not in Shenzhen
            ("440000", "450100"), // other province
            ("440306", "440305"), // sibling county
            ("", "440305"),
            ("440000", ""),
            ("440000", "44030x"),
            ("000000", "000001"),
        ];
        for (a, c) in yes {
            assert!(contains(a, c), "{a} should contain {c}");
        }
        for (a, c) in no {
            assert!(!contains(a, c), "{a} should not contain {c}");
        }
    }
}
