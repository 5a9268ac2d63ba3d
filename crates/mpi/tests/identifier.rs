//! Identifier registry.

use phip_mpi::identifier::*;

#[test]
fn defaults_classify_known_systems() {
    let r = IdentifierRegistry::default();
    let id = r.classify(RESIDENT_ID);
    assert_eq!(id.kind, IdentifierKind::ResidentId);
    assert!(id.trusted && id.exclusive);
    assert_eq!(r.classify(PASSPORT_CN).kind, IdentifierKind::Passport);
    assert_eq!(
        r.classify("urn:oid:2.16.840.1.113883.4.330.840").kind,
        IdentifierKind::Passport
    );
    let mrn = r.classify(&mrn_system("hospital-7"));
    assert_eq!(mrn.kind, IdentifierKind::MedicalRecordNumber);
    assert!(mrn.trusted && !mrn.exclusive);
    assert!(!r.classify(MEDICAL_INSURANCE).trusted);
    assert_eq!(
        r.classify("http://example.org/unknown"),
        Classification::OTHER
    );
}

#[test]
fn registry_is_extensible_and_exact_beats_prefix() {
    let mut r = IdentifierRegistry::default();
    r.register(SystemEntry {
        system: mrn_system("h1"),
        prefix: false,
        kind: IdentifierKind::MedicalRecordNumber,
        trusted: false,
        exclusive: false,
        label: "legacy MRNs with reuse".into(),
    });
    assert!(!r.classify(&mrn_system("h1")).trusted);
    assert!(r.classify(&mrn_system("h2")).trusted);
    let n = r.entries().len();
    r.register(SystemEntry {
        system: mrn_system("h1"),
        prefix: false,
        kind: IdentifierKind::MedicalRecordNumber,
        trusted: true,
        exclusive: false,
        label: "fixed".into(),
    });
    assert_eq!(r.entries().len(), n, "same system replaces");
    assert!(r.classify(&mrn_system("h1")).trusted);
    assert_eq!(
        IdentifierRegistry::empty().classify(RESIDENT_ID),
        Classification::OTHER
    );
}
