//! Search translation against hand-written index entries (the seam that bypasses extraction),
//! for the cases real resources make hard to pin down, on both backends.

mod support;

use phip_fhir::search::{
    Filter, IndexEntry, IndexValue, Modifier, ParamType, Prefix, SearchQuery, SearchValue,
    SortDirection, SortKey, TokenSystem,
};
use phip_store::{PageCursor, SearchRequest, WriteRequest};
use serde_json::json;
use support::Backend;

fn token(code: &str) -> IndexValue {
    IndexValue::Token {
        system: Some("s".into()),
        code: Some(code.into()),
        text: None,
    }
}

fn number(v: f64) -> IndexValue {
    IndexValue::Number {
        value: v,
        low: v - 0.5,
        high: v + 0.5,
    }
}

fn write(s: &Backend, id: &str, entries: Vec<IndexEntry>) {
    s.write_with_entries(
        WriteRequest {
            resource_type: "Basic".into(),
            id: id.into(),
            resource: Some(json!({"resourceType": "Basic"})),
            expected_version: None,
        },
        entries,
    )
    .unwrap();
}

fn entry(param: &str, value: IndexValue) -> IndexEntry {
    IndexEntry {
        param: param.into(),
        value,
    }
}

fn ids(s: &Backend, filters: Vec<Filter>, sort: Vec<SortKey>) -> Vec<String> {
    let mut tx = s.store().begin_read().unwrap();
    let page = tx
        .search(&SearchRequest {
            query: SearchQuery {
                resource_type: Some("Basic".into()),
                filters,
                sort,
                ..SearchQuery::default()
            },
            cursor: PageCursor::First,
            page_size: 50,
            access: phip_store::Access::Server,
        })
        .unwrap();
    page.matches.into_iter().map(|r| r.id).collect()
}

fn combo(code: &str, value: f64) -> Filter {
    Filter::Param {
        code: "combo".into(),
        param_type: ParamType::Composite,
        modifier: Modifier::None,
        values: vec![SearchValue::Composite(vec![
            SearchValue::Token {
                system: TokenSystem::Any,
                code: Some(code.into()),
            },
            SearchValue::Number {
                prefix: Prefix::Eq,
                value,
                low: value - 0.05,
                high: value + 0.05,
            },
        ])],
    }
}

fn composite_components_match_on_one_occurrence(s: &Backend) {
    write(
        s,
        "b1",
        vec![
            entry(
                "combo",
                IndexValue::Composite(vec![token("A"), number(1.0)]),
            ),
            entry(
                "combo",
                IndexValue::Composite(vec![token("B"), number(2.0)]),
            ),
        ],
    );
    write(
        s,
        "b2",
        vec![entry(
            "combo",
            IndexValue::Composite(vec![token("A"), number(2.0)]),
        )],
    );
    assert_eq!(ids(s, vec![combo("A", 1.0)], vec![]), ["b1"]);
    assert_eq!(ids(s, vec![combo("B", 2.0)], vec![]), ["b1"]);
    // A from one occurrence and 2 from the other must not combine.
    assert_eq!(ids(s, vec![combo("A", 2.0)], vec![]), ["b2"]);
    assert!(ids(s, vec![combo("B", 1.0)], vec![]).is_empty());
}

fn sort_by_reference_and_missing_values_last(s: &Backend) {
    let reference = |id: &str| IndexValue::Reference {
        target_type: Some("Patient".into()),
        target_id: Some(id.into()),
        url: None,
        version: None,
        identifier: None,
    };
    write(s, "b1", vec![entry("subject", reference("z"))]);
    write(s, "b2", vec![]);
    write(s, "b3", vec![entry("subject", reference("a"))]);
    let key = |direction| SortKey {
        code: "subject".into(),
        param_type: ParamType::Reference,
        direction,
    };
    assert_eq!(
        ids(s, vec![], vec![key(SortDirection::Ascending)]),
        ["b3", "b1", "b2"]
    );
    assert_eq!(
        ids(s, vec![], vec![key(SortDirection::Descending)]),
        ["b1", "b3", "b2"]
    );
}

macro_rules! seam {
    ($($name:ident),*) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(&super::Backend::sqlite());
                }

                #[test]
                fn postgres() {
                    if let Some(b) = super::Backend::postgres() {
                        super::$name(&b);
                    }
                }

                #[test]
                fn citus() {
                    if let Some(b) = super::Backend::citus() {
                        super::$name(&b);
                    }
                }
            }
        )*
    };
}

seam!(
    composite_components_match_on_one_occurrence,
    sort_by_reference_and_missing_values_last
);
