//! Terser-style paths: `PID-5-1`, `PID-3(2)-4`, `OBX(2)-5`, `PID.5.1`.

/// A parsed path to one value in a message; every position is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Segment id.
    pub segment: String,
    /// Which occurrence of the segment (`OBX(2)`), default 1.
    pub segment_repetition: usize,
    /// Field number.
    pub field: usize,
    /// Field repetition (`PID-3(2)`), default 1.
    pub repetition: usize,
    /// Component, default 1.
    pub component: usize,
    /// Subcomponent, default 1.
    pub subcomponent: usize,
}

impl Path {
    /// Parses `SEG[(n)]-FIELD[(rep)][-COMPONENT[-SUBCOMPONENT]]` (`.` may stand for `-`).
    /// `None` if malformed or a position is 0.
    pub fn parse(path: &str) -> Option<Self> {
        let mut parts = path.split(['-', '.']);
        let (segment, segment_repetition) = indexed(parts.next()?)?;
        if segment.len() != 3 || !segment.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let (field, repetition) = indexed(parts.next()?)?;
        let field = positive(field)?;
        let component = parts.next().map(positive).unwrap_or(Some(1))?;
        let subcomponent = parts.next().map(positive).unwrap_or(Some(1))?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            segment: segment.to_owned(),
            segment_repetition,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

/// Splits `NAME(n)` into the name and `n` (default 1).
fn indexed(part: &str) -> Option<(&str, usize)> {
    match part.split_once('(') {
        Some((name, rest)) => Some((name, positive(rest.strip_suffix(')')?)?)),
        None => Some((part, 1)),
    }
}

fn positive(s: &str) -> Option<usize> {
    s.parse().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_terser_paths() {
        let p = Path::parse("PID-3(2)-4-2").unwrap();
        assert_eq!(
            (
                p.segment.as_str(),
                p.segment_repetition,
                p.field,
                p.repetition,
                p.component,
                p.subcomponent
            ),
            ("PID", 1, 3, 2, 4, 2)
        );
        let p = Path::parse("OBX(3).5").unwrap();
        assert_eq!((p.segment_repetition, p.field, p.component), (3, 5, 1));
        for bad in [
            "PID",
            "PID-0",
            "PID-x",
            "PI-1",
            "PID-1-2-3-4",
            "PID(0)-1",
            "PID-3(2",
        ] {
            assert!(Path::parse(bad).is_none(), "{bad}");
        }
    }
}
