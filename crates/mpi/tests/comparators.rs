//! Comparators: names across scripts, dates, sex, phones, addresses.

use phip_mpi::compare::*;
use phip_mpi::name::PersonName;
use phip_mpi::record::{normalize_phone, BirthDate};
use phip_mpi::text::{fold, pinyin, soundex};
use phip_mpi::{MatchRecord, Sex};
use serde_json::json;

fn text(s: &str) -> Vec<PersonName> {
    PersonName::from_text(s)
}

/// Best (family, given) levels over the name variants of two texts.
fn levels(a: &str, b: &str) -> (Option<u8>, Option<u8>) {
    let mut best = (None, None);
    let mut cost = u8::MAX;
    for x in text(a) {
        for y in text(b) {
            let (f, g) = compare_names(&x, &y);
            let c = f.unwrap_or(9) + g.unwrap_or(9);
            if c < cost {
                cost = c;
                best = (f, g);
            }
        }
    }
    best
}

#[test]
fn folding_and_pinyin() {
    assert_eq!(fold("張偉"), "张伟");
    assert_eq!(fold("ＺＨＡＮＧ  Wéi"), "zhang wei");
    assert_eq!(fold("O'Brien-Smith"), "o brien smith");
    assert_eq!(pinyin("张伟", false), "zhangwei");
    assert_eq!(pinyin("吕", false), "lu");
    // Surname readings of polyphonic characters.
    assert_eq!(pinyin("单", true), "shan");
    assert_eq!(pinyin("曾", true), "zeng");
    assert_eq!(soundex("Robert"), "R163");
    assert_eq!(soundex("Rupert"), "R163");
    assert_eq!(soundex("Ashcraft"), "A261");
    assert_eq!(soundex(""), "");
}

#[test]
fn chinese_names_match_across_scripts_orders_and_homophones() {
    let exact = (Some(NAME_EXACT), Some(NAME_EXACT));
    assert_eq!(levels("张伟", "张伟"), exact);
    assert_eq!(
        levels("张伟", "張偉"),
        exact,
        "traditional folds to simplified"
    );
    assert_eq!(levels("张伟", "Zhang Wei"), exact, "characters vs pinyin");
    assert_eq!(levels("张伟", "ZHANG Wei"), exact);
    assert_eq!(
        levels("Zhang Wei", "Wei Zhang"),
        exact,
        "family/given swapped"
    );
    assert_eq!(levels("張偉", "Wei ZHANG"), exact);
    assert_eq!(
        levels("张伟", "张玮"),
        (Some(NAME_EXACT), Some(NAME_HOMOPHONE))
    );
    assert_eq!(levels("欧阳娜娜", "Ouyang Nana"), exact, "compound surname");
    let (f, g) = levels("张伟", "李娜");
    assert_eq!((f, g), (Some(NAME_DIFFERENT), Some(NAME_DIFFERENT)));
    // Similarity scores order the cases.
    let s = |a: &str, b: &str| name_similarity(&text(a)[0], &text(b)[0]);
    assert_eq!(s("张伟", "張偉"), 1.0);
    assert!(s("张伟", "张玮") >= 0.95);
    assert!(s("张伟", "李娜") < 0.6);
}

#[test]
fn latin_name_levels() {
    let p = |f: &str, g: &str| PersonName::from_parts(f, &[g]);
    let lv = |a: &PersonName, b: &PersonName| compare_names(a, b);
    assert_eq!(
        lv(&p("smith", "john"), &p("smith", "jon")).1,
        Some(NAME_ONE_EDIT)
    );
    assert_eq!(
        lv(&p("smith", "john"), &p("smith", "jhon")).1,
        Some(NAME_ONE_EDIT),
        "transposition"
    );
    assert_eq!(
        lv(&p("smith", "katherine"), &p("smith", "kathryn")).1,
        Some(NAME_SIMILAR)
    );
    assert_eq!(
        lv(&p("smith", "john"), &p("smith", "mary")).1,
        Some(NAME_DIFFERENT)
    );
    assert_eq!(
        lv(&p("", "john"), &p("smith", "john")),
        (None, Some(NAME_EXACT))
    );
}

#[test]
fn birth_date_levels() {
    let d = |s: &str| BirthDate::parse(s).unwrap();
    assert_eq!(compare_birth_date(&d("1985-03-17"), &d("19850317")), 0);
    assert_eq!(
        compare_birth_date(&d("1985-03-07"), &d("1985-07-03")),
        1,
        "day/month swapped"
    );
    assert_eq!(
        compare_birth_date(&d("1985-03-17"), &d("1985-03-18")),
        2,
        "one digit"
    );
    assert_eq!(
        compare_birth_date(&d("1985-03-17"), &d("1958-03-17")),
        2,
        "adjacent transposition"
    );
    assert_eq!(
        compare_birth_date(&d("1985-03-17"), &d("1985-11-29")),
        3,
        "same year"
    );
    assert_eq!(
        compare_birth_date(&d("1985"), &d("1985-11-29")),
        3,
        "partial"
    );
    assert_eq!(compare_birth_date(&d("1985-03-17"), &d("1990-06-01")), 4);
    assert!(BirthDate::parse("85-3-17").is_none());
    assert!(BirthDate::parse("not a date").is_none());
    assert_eq!(compare_sex(Sex::Male, Sex::Male), 0);
    assert_eq!(compare_sex(Sex::Male, Sex::Female), 1);
}

#[test]
fn phone_normalisation_and_levels() {
    assert_eq!(
        normalize_phone("+86 138-0013-8000").as_deref(),
        Some("13800138000")
    );
    assert_eq!(
        normalize_phone("0086 13800138000").as_deref(),
        Some("13800138000")
    );
    assert_eq!(
        normalize_phone("(0755) 8888-1234").as_deref(),
        Some("075588881234")
    );
    assert_eq!(normalize_phone("12345"), None);
    assert_eq!(compare_phone("13800138000", "13800138000"), 0);
    // Landline with and without the area code: last 8 digits agree.
    assert_eq!(compare_phone("075588881234", "88881234"), 1);
    assert_eq!(compare_phone("13800138000", "13900139000"), 2);
}

#[test]
fn division_aware_address_levels() {
    assert_eq!(compare_division("440305", "440305"), 0, "same county");
    assert_eq!(
        compare_division("440305", "440304"),
        1,
        "same prefecture (Shenzhen)"
    );
    assert_eq!(
        compare_division("440300", "440305"),
        1,
        "prefecture contains county"
    );
    assert_eq!(
        compare_division("440305", "440106"),
        2,
        "same province (Guangdong)"
    );
    assert_eq!(compare_division("440305", "110105"), 3);
    assert_eq!(compare_street("科技园路1号", "科技园路1号"), 0);
    assert_eq!(compare_street("8 stanley street", "8 stanley st"), 1);
    assert_eq!(
        compare_street("8 stanley street", "12 pinkerton circuit"),
        3
    );
    assert_eq!(compare_code("2119", "2119"), 0);
    assert_eq!(compare_code("2119", "2191"), 1);
    assert_eq!(compare_locality("winston hills", "winston hils"), 1);
}

#[test]
fn patients_compare_into_vectors() {
    let a = MatchRecord::from_patient(&json!({
        "resourceType": "Patient",
        "name": [{"text": "张伟"}],
        "gender": "male",
        "birthDate": "1985-03-17",
        "telecom": [{"system": "phone", "value": "+86 138 0013 8000"}, {"system": "email", "value": "a@b.cn"}],
        "address": [{"line": ["科技园路1号"], "district": "440305", "postalCode": "518057"}]
    }));
    let b = MatchRecord::from_patient(&json!({
        "resourceType": "Patient",
        "name": [{"family": "ZHANG", "given": ["Wei"]}, {"text": "張偉"}],
        "gender": "male",
        "birthDate": "1985-03-17",
        "telecom": [{"value": "13800138000"}],
        "address": [{"line": ["科技园路一号"], "district": "440304", "postalCode": "518057"}]
    }));
    assert_eq!(a.phones, vec!["13800138000"]);
    assert_eq!(a.addresses[0].division.as_deref(), Some("440305"));
    let v = compare(&a, &b);
    assert_eq!(v[Field::FamilyName as usize], 0);
    assert_eq!(v[Field::GivenName as usize], 0);
    assert_eq!(v[Field::BirthDate as usize], 0);
    assert_eq!(v[Field::Sex as usize], 0);
    assert_eq!(v[Field::Phone as usize], 0);
    assert_eq!(v[Field::Identifier as usize], MISSING);
    assert_eq!(v[Field::Division as usize], 1);
    assert_eq!(v[Field::Postcode as usize], 0);
    assert!(v[Field::Street as usize] <= 2);
    assert_eq!(Field::Division.level_label(1), "same prefecture");
    assert_eq!(Field::Phone.level_label(MISSING), "missing");
}
