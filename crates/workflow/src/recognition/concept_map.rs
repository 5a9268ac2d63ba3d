//! Local codes to LOINC through the region's `ConceptMap`s.
//!
//! Institutions often code results with local item codes. A ConceptMap whose group maps a
//! local `source` system to `http://loinc.org` as `target` makes those codes comparable: a
//! request for a local code also finds results coded with its LOINC equivalent, and a request
//! for a LOINC code also finds results coded only locally. Only mappings whose equivalence is
//! `equal` or `equivalent` count (a wider or narrower result does not cover the test asked for).

use serde_json::Value;

use crate::referral::LOINC;

/// One `system|code` pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Code {
    /// The code system URI.
    pub system: String,
    /// The code.
    pub code: String,
}

impl Code {
    /// A code in `system`.
    pub fn new(system: impl Into<String>, code: impl Into<String>) -> Self {
        Self {
            system: system.into(),
            code: code.into(),
        }
    }

    /// As a search token, `system|code`.
    pub fn token(&self) -> String {
        format!("{}|{}", self.system, self.code)
    }
}

/// The equivalent local↔LOINC pairs of a set of ConceptMaps.
#[derive(Debug, Clone, Default)]
pub struct LocalCodes {
    pairs: Vec<(Code, Code)>,
}

impl LocalCodes {
    /// Collects the equal/equivalent mappings to LOINC from `concept_maps`.
    pub fn from_concept_maps<'a>(concept_maps: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut pairs = Vec::new();
        for map in concept_maps {
            let groups = map.get("group").and_then(Value::as_array);
            for group in groups.into_iter().flatten() {
                let (Some(source), Some(LOINC)) = (
                    group.get("source").and_then(Value::as_str),
                    group.get("target").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let elements = group.get("element").and_then(Value::as_array);
                for element in elements.into_iter().flatten() {
                    let Some(local) = element.get("code").and_then(Value::as_str) else {
                        continue;
                    };
                    let targets = element.get("target").and_then(Value::as_array);
                    for target in targets.into_iter().flatten() {
                        let equivalent = matches!(
                            target.get("equivalence").and_then(Value::as_str),
                            Some("equal" | "equivalent")
                        );
                        if let (true, Some(code)) =
                            (equivalent, target.get("code").and_then(Value::as_str))
                        {
                            pairs.push((Code::new(source, local), Code::new(LOINC, code)));
                        }
                    }
                }
            }
        }
        Self { pairs }
    }

    /// The LOINC code `code` stands for: itself if LOINC, else its mapped equivalent.
    pub fn loinc_of(&self, code: &Code) -> Option<String> {
        if code.system == LOINC {
            return Some(code.code.clone());
        }
        self.pairs
            .iter()
            .find(|(local, _)| local == code)
            .map(|(_, loinc)| loinc.code.clone())
    }

    /// Every code equivalent to LOINC `loinc`: the LOINC code and the local codes mapped to it.
    pub fn equivalents(&self, loinc: &str) -> Vec<Code> {
        let mut codes = vec![Code::new(LOINC, loinc)];
        codes.extend(
            self.pairs
                .iter()
                .filter(|(_, target)| target.code == loinc)
                .map(|(local, _)| local.clone()),
        );
        codes.sort();
        codes.dedup();
        codes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_local_codes_both_ways_and_ignores_inexact() {
        let map = json!({"resourceType": "ConceptMap", "group": [{
            "source": "urn:oid:local-lab", "target": LOINC,
            "element": [
                {"code": "HGB", "target": [{"code": "718-7", "equivalence": "equivalent"}]},
                {"code": "BLOOD", "target": [{"code": "58410-2", "equivalence": "wider"}]}
            ]
        }]});
        let codes = LocalCodes::from_concept_maps([&map]);
        assert_eq!(
            codes
                .loinc_of(&Code::new("urn:oid:local-lab", "HGB"))
                .as_deref(),
            Some("718-7")
        );
        assert_eq!(
            codes.loinc_of(&Code::new("urn:oid:local-lab", "BLOOD")),
            None
        );
        assert_eq!(
            codes.equivalents("718-7"),
            vec![
                Code::new(LOINC, "718-7"),
                Code::new("urn:oid:local-lab", "HGB")
            ]
        );
    }
}
