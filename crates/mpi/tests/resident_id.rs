//! Resident ID validation, parsing, upgrade and cross-check.

use chrono::NaiveDate;
use phip_mpi::resident_id::{self, check_char, IdMismatch, ResidentIdError};
use phip_mpi::{MatchRecord, Sex};
use serde_json::json;

/// Builds a valid ID from its parts, computing the check character independently of the
/// library (weights 2^(17-i) mod 11).
fn make(area: &str, birth: &str, seq: &str) -> String {
    let first17 = format!("{area}{birth}{seq}");
    let sum: u32 = first17
        .bytes()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * (2u32.pow(17 - i as u32) % 11))
        .sum();
    let check = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize];
    format!("{first17}{check}")
}

#[test]
fn known_good_ids_parse() {
    // The GB 11643-1999 example number.
    let id = resident_id::parse("11010519491231002X").unwrap();
    assert_eq!(id.area_code, "110105");
    assert_eq!(
        id.birth_date,
        NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
    );
    assert_eq!(id.sex, Sex::Female);
    // Lower-case x and whitespace are accepted and canonicalised.
    assert_eq!(
        resident_id::parse(" 11010519491231002x ").unwrap().number,
        "11010519491231002X"
    );
    for (area, birth, seq, sex) in [
        ("440305", "19850317", "123", Sex::Male),
        ("310104", "20000229", "456", Sex::Female),
        ("429004", "19701001", "001", Sex::Male),
    ] {
        let n = make(area, birth, seq);
        let id = resident_id::parse(&n).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(id.sex, sex, "{n}");
        assert_eq!(id.birth_date.format("%Y%m%d").to_string(), birth);
        assert!(resident_id::is_valid(&n));
    }
}

#[test]
fn check_digit_errors_report_expected_and_found() {
    let good = make("440305", "19850317", "123");
    let expected = good.chars().last().unwrap();
    let wrong = if expected == '0' { '1' } else { '0' };
    let bad = format!("{}{wrong}", &good[..17]);
    assert_eq!(
        resident_id::parse(&bad),
        Err(ResidentIdError::CheckDigit {
            expected,
            found: wrong
        })
    );
    assert_eq!(check_char(&good[..17]), Some(expected));
    assert_eq!(check_char("123"), None);
}

#[test]
fn length_charset_date_and_area_errors() {
    assert_eq!(
        resident_id::parse("11010519491231002"),
        Err(ResidentIdError::Length {
            expected: 18,
            found: 17
        })
    );
    assert_eq!(
        resident_id::parse("110105194912310X2X"),
        Err(ResidentIdError::Charset {
            position: 15,
            found: 'X'
        })
    );
    assert_eq!(
        resident_id::parse("11010519491231002Y"),
        Err(ResidentIdError::Charset {
            position: 17,
            found: 'Y'
        })
    );
    // Full-width digits are not ASCII digits.
    assert!(matches!(
        resident_id::parse("１10105194912310021"),
        Err(ResidentIdError::Charset { position: 0, .. })
    ));
    // 30 February, month 13, and a birth date in the future.
    for birth in ["19850230", "19851301", "29990101"] {
        let n = make("440305", birth, "123");
        assert_eq!(
            resident_id::parse(&n),
            Err(ResidentIdError::BirthDate(birth.to_string())),
            "{n}"
        );
    }
    let n = make("000000", "19850317", "123");
    assert_eq!(
        resident_id::parse(&n),
        Err(ResidentIdError::AreaCode("000000".into()))
    );
}

#[test]
fn fifteen_digit_ids_upgrade() {
    // 15-digit form of the standard's example: 110105 491231 002.
    let id = resident_id::upgrade_15("110105491231002").unwrap();
    assert_eq!(id.number, "11010519491231002X");
    assert_eq!(resident_id::parse_any("110105491231002").unwrap(), id);
    assert_eq!(
        resident_id::upgrade_15("11010549123100"),
        Err(ResidentIdError::Length {
            expected: 15,
            found: 14
        })
    );
    assert!(matches!(
        resident_id::upgrade_15("110105491331002"),
        Err(ResidentIdError::BirthDate(_))
    ));
}

#[test]
fn cross_check_reports_mismatches() {
    let id = resident_id::parse(&make("440305", "19850317", "123")).unwrap();
    assert!(resident_id::cross_check(&id, Some("1985-03-17"), Some(Sex::Male)).is_empty());
    assert!(resident_id::cross_check(&id, Some("1985-03"), None).is_empty());
    assert!(resident_id::cross_check(&id, None, None).is_empty());
    let found = resident_id::cross_check(&id, Some("1985-07-13"), Some(Sex::Female));
    assert_eq!(
        found,
        vec![
            IdMismatch::BirthDate {
                encoded: NaiveDate::from_ymd_opt(1985, 3, 17).unwrap(),
                recorded: "1985-07-13".into()
            },
            IdMismatch::Sex {
                encoded: Sex::Male,
                recorded: Sex::Female
            }
        ]
    );
    // Through a record built from a Patient; the legacy 15-digit form is upgraded.
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": phip_mpi::identifier::RESIDENT_ID, "value": "110105491231002"}],
        "gender": "male",
        "birthDate": "1949-12-31"
    });
    let record = MatchRecord::from_patient(&patient);
    assert_eq!(record.identifiers[0].value, "11010519491231002X");
    assert!(record.identifiers[0].valid);
    assert_eq!(
        record.resident_id_mismatches(),
        vec![IdMismatch::Sex {
            encoded: Sex::Female,
            recorded: Sex::Male
        }]
    );
}
