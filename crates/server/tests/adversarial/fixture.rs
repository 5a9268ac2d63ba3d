//! The world the suite attacks, built over HTTP with the tokens integration engines would use.
//!
//! Two counties of Jiangsu: org-a in 溧阳市 (320481) and org-b and org-c in 江宁区 (320115).
//! - alice: her records are held by org-a (Patient, Condition, an HIV result, a CD4 count,
//!   MedicationRequest, Encounter, DocumentReference);
//! - bob: records held by org-b, and one Condition held by org-a (he was seen in 溧阳);
//! - carol: records held by org-b, and an active privacy Consent that denies org-c.
//!
//! Every record carries distinctive secret strings; [`World::hidden_from`] says, from the
//! rules of `docs/security.md`, which of them a caller must never receive.

#![allow(dead_code)]

use std::collections::BTreeSet;

use phip_security::token::Grant;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::common::resident_id;
use super::harness::{Auth, Node, Request};

pub const ORG_A: &str = "org-a";
pub const ORG_B: &str = "org-b";
pub const ORG_C: &str = "org-c";
/// 溧阳市, Changzhou, Jiangsu.
pub const DIV_A: &str = "320481";
/// 江宁区, Nanjing, Jiangsu.
pub const DIV_B: &str = "320115";
pub const DIV_C: &str = "320115";

pub const RESIDENT_ID: &str = "urn:oid:2.16.156.10011.1.1";
pub const MRN_A: &str = "https://phip.cn/fhir/sid/mrn/org-a";
pub const MRN_B: &str = "https://phip.cn/fhir/sid/mrn/org-b";
pub const OBS_ID_SYSTEM: &str = "https://phip.cn/fhir/sid/observation";
pub const LOINC: &str = "http://loinc.org";
pub const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
pub const CONSENT_SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";

/// The residents of the fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Who {
    Alice,
    Bob,
    Carol,
}

impl Who {
    pub fn name(self) -> &'static str {
        match self {
            Who::Alice => "alice",
            Who::Bob => "bob",
            Who::Carol => "carol",
        }
    }
}

/// Who holds a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An organisation and its division.
    Org(&'static str, &'static str),
    /// A regional record (no holder division): written by the operator or a resident.
    Regional,
}

/// Who is looking, in the terms of `docs/security.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// `system/` token without organisation or division.
    Operator,
    /// A resident's `patient/` token.
    Resident(Who),
    /// A `user/` or `system/` token of an organisation; `types` limits the readable types
    /// (`None`: every type).
    Org {
        org: &'static str,
        division: &'static str,
        types: Option<Vec<&'static str>>,
    },
    /// No valid token.
    Nobody,
}

/// One stored record and the secrets it carries.
#[derive(Debug, Clone)]
pub struct Record {
    /// A name for messages, e.g. `alice.hiv`.
    pub label: String,
    pub resource_type: &'static str,
    pub id: String,
    /// Whose compartment it is in (`None`: in no patient's compartment).
    pub patient: Option<Who>,
    pub holder: Holder,
    /// Distinctive strings that appear only in this record (and, for a Patient, in the
    /// person's golden record).
    pub secrets: Vec<String>,
}

/// A resident's ids and values.
#[derive(Debug, Clone)]
pub struct Resident {
    pub who: Who,
    /// The Patient record at the holding organisation.
    pub patient: String,
    /// The golden record the patient index linked it to.
    pub golden: String,
    /// Their `patient/*.cruds` token, bound to `patient`.
    pub token: String,
    pub family: String,
    pub given: String,
    pub birth_date: String,
    pub gender: &'static str,
    pub resident_id: String,
    pub mrn_system: &'static str,
    pub mrn: String,
    pub phone: String,
    /// Their main clinical record: an Observation with a secret `valueString`.
    pub observation: String,
    pub observation_code: &'static str,
    pub observation_value: String,
    pub observation_identifier: String,
    pub condition: String,
    pub condition_code: &'static str,
    pub condition_text: String,
    pub medication: String,
}

/// The fixture: residents, records, tokens.
pub struct World {
    pub alice: Resident,
    pub bob: Resident,
    pub carol: Resident,
    /// Bob's Condition held by org-a.
    pub bob_at_a: String,
    pub bob_at_a_text: String,
    /// Alice's CD4 count (a quantity).
    pub alice_cd4: String,
    pub alice_encounter: String,
    pub alice_document: String,
    /// Carol's privacy Consent denying org-c.
    pub carol_consent: String,
    /// A regional Practitioner every resident's Observation names as performer.
    pub doctor: String,
    /// A Practitioner held by org-a (hidden from org-b and org-c) that alice's Encounter and
    /// bob's MedicationRequest at org-b name: `$everything` must add it only for callers who
    /// may see it.
    pub org_a_doctor: String,
    pub org_a_doctor_name: String,
    pub records: Vec<Record>,
    pub operator: String,
    pub org_a_user: String,
    pub org_b_user: String,
    pub org_c_user: String,
    pub org_a_system: String,
    pub org_b_system: String,
    pub org_c_system: String,
    /// org-b's `user/Observation.rs` token: no other type, no role.
    pub no_role: String,
    /// A `user/*.cruds` token of no organisation, with no role.
    pub roleless_user: String,
    pub auditor: String,
    /// A consent steward of the registry office (no division).
    pub steward: String,
    pub garbage: String,
}

fn user_grant(org: &str, division: &str, scope: &str) -> Grant {
    Grant {
        sub: format!("staff-{org}"),
        scope: scope.into(),
        org: Some(org.into()),
        division: Some(division.into()),
        ..Grant::default()
    }
}

fn system_grant(org: &str, division: &str) -> Grant {
    Grant {
        sub: format!("engine-{org}"),
        client_id: Some(format!("engine-{org}")),
        scope: "system/*.cruds".into(),
        org: Some(org.into()),
        division: Some(division.into()),
        ..Grant::default()
    }
}

/// Creates a resource as `token` and returns its id, failing the test otherwise.
pub async fn create(node: &Node, token: &str, resource: &Value) -> String {
    let resource_type = resource["resourceType"].as_str().expect("resourceType");
    let reply = node
        .send(
            &Auth::Bearer(token.to_owned()),
            &Request::post(resource_type, resource),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "fixture: creating {resource_type} failed: {}",
        reply.describe()
    );
    reply.body["id"].as_str().expect("id").to_owned()
}

/// The golden record of a source Patient (read with the operator token).
pub async fn golden_of(node: &Node, operator: &str, patient: &str) -> String {
    let reply = node
        .send(
            &Auth::Bearer(operator.to_owned()),
            &Request::get(format!("Patient/{patient}")),
        )
        .await;
    reply.body["link"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["type"] == "refer"))
        .and_then(|l| l["other"]["reference"].as_str())
        .and_then(|r| r.strip_prefix("Patient/"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "fixture: Patient/{patient} has no golden record: {}",
                reply.describe()
            )
        })
}

/// A resident's clinical records: who, LOINC code, secret value, identifier, ICD-10 code,
/// condition text, and the Patient the result names as its focus.
type ClinicalPlan<'a> = (
    Who,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'a str>,
);

struct PatientSpec {
    who: Who,
    tag: &'static str,
    family: &'static str,
    given: &'static str,
    birth: &'static str,
    gender: &'static str,
    sequence: &'static str,
    area: &'static str,
    mrn_system: &'static str,
    phone: &'static str,
}

fn patient_body(spec: &PatientSpec, rid: &str, mrn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [
            {"system": spec.mrn_system, "value": mrn},
            {"system": RESIDENT_ID, "value": rid}
        ],
        "name": [{"use": "official", "family": spec.family, "given": [spec.given]}],
        "gender": spec.gender,
        "birthDate": spec.birth,
        "telecom": [{"system": "phone", "value": spec.phone}],
        "address": [{"line": [format!("{}-ADDRESS-SECRET", spec.tag)], "district": "secret"}]
    })
}

fn observation_body(
    patient: &str,
    code: &str,
    value: &str,
    identifier: &str,
    doctor: &str,
    focus: Option<&str>,
) -> Value {
    let mut body = json!({
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": OBS_ID_SYSTEM, "value": identifier}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "performer": [{"reference": format!("Practitioner/{doctor}")}],
        "effectiveDateTime": "2023-07-31",
        "valueString": value
    });
    if let Some(focus) = focus {
        body["focus"] = json!([{"reference": format!("Patient/{focus}")}]);
    }
    body
}

fn condition_body(patient: &str, code: &str, text: &str) -> Value {
    json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": ICD10, "code": code}], "text": text},
        "subject": {"reference": format!("Patient/{patient}")},
        "recordedDate": "2023-07-31"
    })
}

fn medication_body(patient: &str, text: &str, requester: Option<&str>) -> Value {
    let mut body = json!({
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": text},
        "subject": {"reference": format!("Patient/{patient}")},
        "authoredOn": "2023-08-01"
    });
    if let Some(requester) = requester {
        body["requester"] = json!({"reference": format!("Practitioner/{requester}")});
    }
    body
}

/// A privacy Consent of `patient` with one provision of `kind` (`permit`/`deny`) for `org`.
pub fn privacy_consent(patient: &str, kind: &str, org: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "provision": {"type": kind, "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": {"reference": format!("Organization/{org}")}}]}
    })
}

impl World {
    /// Builds the fixture on `node`.
    pub async fn build(node: &Node) -> World {
        let operator = node.mint(Grant {
            sub: "operator".into(),
            scope: "system/*.cruds".into(),
            ..Grant::default()
        });
        let org_a_user = node.mint(user_grant(ORG_A, DIV_A, "user/*.cruds"));
        let org_b_user = node.mint(user_grant(ORG_B, DIV_B, "user/*.cruds"));
        let org_c_user = node.mint(user_grant(ORG_C, DIV_C, "user/*.cruds"));
        let org_a_system = node.mint(system_grant(ORG_A, DIV_A));
        let org_b_system = node.mint(system_grant(ORG_B, DIV_B));
        let org_c_system = node.mint(system_grant(ORG_C, DIV_C));
        let no_role = node.mint(user_grant(ORG_B, DIV_B, "user/Observation.rs"));
        let roleless_user = node.mint(Grant {
            sub: "roleless".into(),
            scope: "user/*.cruds".into(),
            ..Grant::default()
        });
        let auditor = node.mint(Grant {
            sub: "auditor".into(),
            scope: "user/*.rs".into(),
            roles: vec!["auditor".into()],
            ..Grant::default()
        });
        let steward = node.mint(Grant {
            sub: "steward".into(),
            scope: "user/Consent.cruds user/Patient.rs".into(),
            org: Some("registry-office".into()),
            roles: vec!["consent-steward".into()],
            ..Grant::default()
        });

        let doctor = create(
            node,
            &operator,
            &json!({"resourceType": "Practitioner", "name": [{"family": "Shared", "given": ["Doctor"]}]}),
        )
        .await;

        let org_a_doctor_name = "ORGA-DOCTOR-SECRET-9090".to_owned();
        let org_a_doctor = create(
            node,
            &org_a_system,
            &json!({"resourceType": "Practitioner", "name": [{"family": org_a_doctor_name}]}),
        )
        .await;

        let specs = [
            PatientSpec {
                who: Who::Alice,
                tag: "ALICE",
                family: "ZHAOALICE-SECRET-7731",
                given: "ALICEGIVEN-SECRET-7731",
                birth: "1977-03-31",
                gender: "female",
                sequence: "128",
                area: DIV_A,
                mrn_system: MRN_A,
                phone: "13977310001",
            },
            PatientSpec {
                who: Who::Bob,
                tag: "BOB",
                family: "QIANBOB-SECRET-4242",
                given: "BOBGIVEN-SECRET-4242",
                birth: "1985-04-24",
                gender: "male",
                sequence: "133",
                area: DIV_B,
                mrn_system: MRN_B,
                phone: "13842420002",
            },
            PatientSpec {
                who: Who::Carol,
                tag: "CAROL",
                family: "SUNCAROL-SECRET-5353",
                given: "CAROLGIVEN-SECRET-5353",
                birth: "1990-05-03",
                gender: "female",
                sequence: "246",
                area: DIV_B,
                mrn_system: MRN_B,
                phone: "13753530003",
            },
        ];
        let holder_token = |who: Who| match who {
            Who::Alice => org_a_system.clone(),
            Who::Bob | Who::Carol => org_b_system.clone(),
        };
        let holder_of = |who: Who| match who {
            Who::Alice => Holder::Org(ORG_A, DIV_A),
            Who::Bob | Who::Carol => Holder::Org(ORG_B, DIV_B),
        };
        let mut records = vec![
            Record {
                label: "doctor".into(),
                resource_type: "Practitioner",
                id: doctor.clone(),
                patient: None,
                holder: Holder::Regional,
                secrets: Vec::new(),
            },
            Record {
                label: "org-a.doctor".into(),
                resource_type: "Practitioner",
                id: org_a_doctor.clone(),
                patient: None,
                holder: Holder::Org(ORG_A, DIV_A),
                secrets: vec![org_a_doctor_name.clone()],
            },
        ];
        let mut patients = Vec::new();
        for spec in &specs {
            let rid = resident_id(spec.area, &spec.birth.replace('-', ""), spec.sequence);
            let mrn = format!("MRN-{}-SECRET", spec.tag);
            let token = holder_token(spec.who);
            let id = create(node, &token, &patient_body(spec, &rid, &mrn)).await;
            records.push(Record {
                label: format!("{}.patient", spec.who.name()),
                resource_type: "Patient",
                id: id.clone(),
                patient: Some(spec.who),
                holder: holder_of(spec.who),
                secrets: vec![
                    spec.family.into(),
                    spec.given.into(),
                    rid.clone(),
                    mrn.clone(),
                    spec.phone.into(),
                    format!("{}-ADDRESS-SECRET", spec.tag),
                ],
            });
            patients.push((id, rid, mrn));
        }
        let alice_id = patients[0].0.clone();
        let bob_id = patients[1].0.clone();
        let carol_id = patients[2].0.clone();

        // The clinical records, each written by its holder.
        let mut clinical = Vec::new();
        let plan: [ClinicalPlan<'_>; 3] = [
            (
                Who::Alice,
                "75622-1",
                "HIV-POSITIVE-SECRET-7731",
                "OBS-ALICE-SECRET-7731",
                "B20",
                "ALICE-CONDITION-SECRET-7731",
                Some(bob_id.as_str()),
            ),
            (
                Who::Bob,
                "2345-7",
                "BOB-GLUCOSE-SECRET-4242",
                "OBS-BOB-SECRET-4242",
                "E11",
                "BOB-CONDITION-SECRET-4242",
                None,
            ),
            (
                Who::Carol,
                "5195-3",
                "CAROL-HBSAG-SECRET-5353",
                "OBS-CAROL-SECRET-5353",
                "F20",
                "CAROL-CONDITION-SECRET-5353",
                None,
            ),
        ];
        for (i, (who, code, value, identifier, condition_code, condition_text, focus)) in
            plan.iter().enumerate()
        {
            let patient = &patients[i].0;
            let token = holder_token(*who);
            // Alice's HIV result names bob as its focus (partner notification): a record
            // that refers to bob without being in his compartment.
            let observation = create(
                node,
                &token,
                &observation_body(patient, code, value, identifier, &doctor, *focus),
            )
            .await;
            let condition = create(
                node,
                &token,
                &condition_body(patient, condition_code, condition_text),
            )
            .await;
            let medication_text = format!("{}-MEDICATION-SECRET", who.name().to_uppercase());
            // Bob's prescription at org-b names org-a's doctor, whom org-b may not see.
            let requester = (*who == Who::Bob).then_some(org_a_doctor.as_str());
            let medication = create(
                node,
                &token,
                &medication_body(patient, &medication_text, requester),
            )
            .await;
            for (label, rt, id, secrets) in [
                (
                    "observation",
                    "Observation",
                    &observation,
                    vec![value.to_string(), identifier.to_string()],
                ),
                (
                    "condition",
                    "Condition",
                    &condition,
                    vec![condition_text.to_string()],
                ),
                (
                    "medication",
                    "MedicationRequest",
                    &medication,
                    vec![medication_text.clone()],
                ),
            ] {
                records.push(Record {
                    label: format!("{}.{label}", who.name()),
                    resource_type: rt,
                    id: id.clone(),
                    patient: Some(*who),
                    holder: holder_of(*who),
                    secrets,
                });
            }
            clinical.push((observation, condition, medication));
        }

        // Alice's other records at org-a.
        let alice_cd4 = create(
            node,
            &org_a_system,
            &json!({"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "24467-3"}]},
                "subject": {"reference": format!("Patient/{alice_id}")},
                "performer": [{"reference": format!("Practitioner/{doctor}")}],
                "effectiveDateTime": "2023-07-31",
                "valueQuantity": {"value": 773.1, "unit": "/uL", "system": "http://unitsofmeasure.org", "code": "/uL"},
                "note": [{"text": "ALICE-CD4-NOTE-SECRET-7731"}]}),
        )
        .await;
        let alice_encounter = create(
            node,
            &org_a_system,
            &json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": format!("Patient/{alice_id}")},
                "participant": [{"individual": {"reference": format!("Practitioner/{org_a_doctor}")}}],
                "period": {"start": "2023-07-31T09:00:00+08:00", "end": "2023-07-31T10:00:00+08:00"},
                "reasonCode": [{"text": "ALICE-ENCOUNTER-SECRET-7731"}]}),
        )
        .await;
        let document_body = "ALICE-DOCUMENT-BODY-SECRET-7731";
        use base64::Engine as _;
        let alice_document = create(
            node,
            &org_a_system,
            &json!({"resourceType": "DocumentReference", "status": "current",
                "type": {"coding": [{"system": LOINC, "code": "11506-3"}]},
                "subject": {"reference": format!("Patient/{alice_id}")},
                "description": "ALICE-DOCUMENT-SECRET-7731",
                "content": [{"attachment": {"contentType": "text/plain",
                    "data": base64::engine::general_purpose::STANDARD.encode(document_body)}}]}),
        )
        .await;
        for (label, rt, id, secrets) in [
            (
                "alice.cd4",
                "Observation",
                &alice_cd4,
                vec!["ALICE-CD4-NOTE-SECRET-7731".to_owned()],
            ),
            (
                "alice.encounter",
                "Encounter",
                &alice_encounter,
                vec!["ALICE-ENCOUNTER-SECRET-7731".to_owned()],
            ),
            (
                "alice.document",
                "DocumentReference",
                &alice_document,
                vec![
                    "ALICE-DOCUMENT-SECRET-7731".to_owned(),
                    document_body.to_owned(),
                ],
            ),
        ] {
            records.push(Record {
                label: label.into(),
                resource_type: rt,
                id: id.clone(),
                patient: Some(Who::Alice),
                holder: Holder::Org(ORG_A, DIV_A),
                secrets,
            });
        }

        // Bob was seen in 溧阳 once: org-a holds that Condition.
        let bob_at_a_text = "BOB-AT-ORGA-SECRET-4242".to_owned();
        let bob_at_a = create(
            node,
            &org_a_system,
            &condition_body(&bob_id, "F32", &bob_at_a_text),
        )
        .await;
        records.push(Record {
            label: "bob.condition-at-org-a".into(),
            resource_type: "Condition",
            id: bob_at_a.clone(),
            patient: Some(Who::Bob),
            holder: Holder::Org(ORG_A, DIV_A),
            secrets: vec![bob_at_a_text.clone()],
        });

        let resident_token = |who: Who, patient: &str| {
            node.mint(Grant {
                sub: format!("resident-{}", who.name()),
                scope: "patient/*.cruds".into(),
                patient: Some(patient.to_owned()),
                ..Grant::default()
            })
        };
        let carol_token = resident_token(Who::Carol, &carol_id);
        // Carol denies org-c, with her own token.
        let carol_consent = create(
            node,
            &carol_token,
            &privacy_consent(&carol_id, "deny", ORG_C),
        )
        .await;
        records.push(Record {
            label: "carol.consent".into(),
            resource_type: "Consent",
            id: carol_consent.clone(),
            patient: Some(Who::Carol),
            holder: Holder::Regional,
            secrets: Vec::new(),
        });

        let mut residents = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let (id, rid, mrn) = patients[i].clone();
            let golden = golden_of(node, &operator, &id).await;
            let (observation, condition, medication) = clinical[i].clone();
            let (_, code, value, identifier, condition_code, condition_text, _) = plan[i];
            residents.push(Resident {
                who: spec.who,
                token: if spec.who == Who::Carol {
                    carol_token.clone()
                } else {
                    resident_token(spec.who, &id)
                },
                patient: id,
                golden,
                family: spec.family.into(),
                given: spec.given.into(),
                birth_date: spec.birth.into(),
                gender: spec.gender,
                resident_id: rid,
                mrn_system: spec.mrn_system,
                mrn,
                phone: spec.phone.into(),
                observation,
                observation_code: code,
                observation_value: value.into(),
                observation_identifier: identifier.into(),
                condition,
                condition_code,
                condition_text: condition_text.into(),
                medication,
            });
        }
        for r in &residents {
            // Golden records: visible when a linked source is (rule 5); the person's
            // demographics they carry are the source Patient's secrets.
            records.push(Record {
                label: format!("{}.golden", r.who.name()),
                resource_type: "Patient",
                id: r.golden.clone(),
                patient: Some(r.who),
                holder: holder_of(r.who),
                secrets: Vec::new(),
            });
        }
        let carol = residents.pop().expect("carol");
        let bob = residents.pop().expect("bob");
        let alice = residents.pop().expect("alice");
        let goldens: BTreeSet<&String> = [&alice.golden, &bob.golden, &carol.golden].into();
        assert_eq!(goldens.len(), 3, "fixture: three different persons");
        World {
            alice,
            bob,
            carol,
            bob_at_a,
            bob_at_a_text,
            alice_cd4,
            alice_encounter,
            alice_document,
            carol_consent,
            doctor,
            org_a_doctor,
            org_a_doctor_name,
            records,
            operator,
            org_a_user,
            org_b_user,
            org_c_user,
            org_a_system,
            org_b_system,
            org_c_system,
            no_role,
            roleless_user,
            auditor,
            steward,
            garbage: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.AAAA".into(),
        }
    }

    pub fn resident(&self, who: Who) -> &Resident {
        match who {
            Who::Alice => &self.alice,
            Who::Bob => &self.bob,
            Who::Carol => &self.carol,
        }
    }

    /// Whether `viewer` may see `record` under `docs/security.md`.
    pub fn visible(viewer: &Viewer, record: &Record) -> bool {
        match viewer {
            Viewer::Operator => true,
            Viewer::Nobody => false,
            Viewer::Resident(who) => record.patient == Some(*who),
            Viewer::Org {
                org,
                division,
                types,
            } => {
                if let Some(types) = types {
                    if !types.contains(&record.resource_type) {
                        return false;
                    }
                }
                if let Holder::Org(holder, _) = record.holder {
                    if holder == *org {
                        return true;
                    }
                }
                // Carol's active Consent denies org-c.
                if record.patient == Some(Who::Carol) && *org == ORG_C {
                    return false;
                }
                match record.holder {
                    Holder::Regional => true,
                    Holder::Org(_, holder_division) => division_contains(division, holder_division),
                }
            }
        }
    }

    /// Every secret `viewer` must never receive.
    pub fn hidden_from(&self, viewer: &Viewer) -> Vec<String> {
        let visible: BTreeSet<&String> = self
            .records
            .iter()
            .filter(|r| Self::visible(viewer, r))
            .flat_map(|r| r.secrets.iter())
            .collect();
        let mut hidden: Vec<String> = self
            .records
            .iter()
            .filter(|r| !Self::visible(viewer, r))
            .flat_map(|r| r.secrets.iter())
            .filter(|s| !visible.contains(s))
            .cloned()
            .collect();
        hidden.sort();
        hidden.dedup();
        hidden
    }

    /// The records `viewer` may see.
    pub fn visible_records(&self, viewer: &Viewer) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| Self::visible(viewer, r))
            .collect()
    }

    pub fn record(&self, label: &str) -> &Record {
        self.records
            .iter()
            .find(|r| r.label == label)
            .unwrap_or_else(|| panic!("no record {label}"))
    }
}

/// Whether a caller bound to `mine` sees records held in `holder` (a province its cities and
/// counties, a city its counties).
pub fn division_contains(mine: &str, holder: &str) -> bool {
    if mine.len() != 6 || holder.len() != 6 {
        return mine == holder;
    }
    if let Some(province) = mine.strip_suffix("0000") {
        return holder.starts_with(province);
    }
    if let Some(city) = mine.strip_suffix("00") {
        return holder.starts_with(city);
    }
    mine == holder
}
