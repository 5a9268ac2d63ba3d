//! The HL7 v2 feed end to end: messages sent over real MLLP sockets, applied through the
//! engine and the patient index, and queried back over FHIR — on both backends.

mod common;

use std::sync::Arc;

use common::{resident_id, Backend, TestServer};
use phip_hl7v2::ack::read_ack;
use phip_hl7v2::mllp::{MllpClient, ServerConfig};
use phip_hl7v2::{AckCode, Message};
use phip_server::hl7::Hl7Handler;
use serde_json::Value;

const MRN_A: &str = "urn:phip:id:HOSPA";

/// Starts an MLLP listener feeding `server`'s engine; returns its address.
async fn start_feed(server: &TestServer) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let handler = Arc::new(Hl7Handler::new(server.engine.clone(), server.base.clone()));
    tokio::spawn(phip_hl7v2::mllp::serve(
        listener,
        handler,
        ServerConfig::default(),
        std::future::pending::<()>(),
    ));
    address
}

/// Sends one message and returns (MSA-1, MSA-2, ERR locations and codes).
async fn send(client: &mut MllpClient, message: &[u8]) -> (AckCode, String, Vec<(String, u16)>) {
    let reply = client.send(message).await.expect("ack");
    let parsed = Message::parse(&reply).expect("ack parses");
    let (code, control, errors) = read_ack(&parsed).expect("an ACK");
    let errors = errors
        .iter()
        .map(|e| {
            (
                e.location
                    .as_ref()
                    .map(|l| l.components().join("^"))
                    .unwrap_or_default(),
                e.code.code(),
            )
        })
        .collect();
    (code, control, errors)
}

async fn one(server: &TestServer, query: &str) -> Value {
    let reply = server.get(query).await;
    let entries = reply.entries();
    assert_eq!(entries.len(), 1, "{query}: {}", reply.body);
    entries[0].clone()
}

fn refer_of(patient: &Value) -> String {
    patient["link"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["type"] == "refer"))
        .and_then(|l| l["other"]["reference"].as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn mllp_feed_is_applied_through_the_index(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let address = start_feed(&server).await;
    let mut client = MllpClient::connect(address).await.expect("connect");
    let rid = resident_id("110105", "19800517", "123");

    // Admission at hospital A, with the resident ID as a second identifier.
    let a01 = format!(
        "MSH|^~\\&|HIS|HOSPA|PHIP|HUB|20261125080000||ADT^A01^ADT_A01|A-1|P|2.5.1\r\
         PID|1||A100^^^^MR~{rid}^^^^NNCHN||ZHANG^WEI||19800517|M|||Chaoyang Rd 1^^Beijing\r\
         PV1|1|I|W1^101^1||||||||||||||||V1|||||||||||||||||||||||||20261125080000\r"
    );
    let (code, control, errors) = send(&mut client, a01.as_bytes()).await;
    assert_eq!(
        (code, control.as_str()),
        (AckCode::Accept, "A-1"),
        "{errors:?}"
    );
    let patient = one(&server, &format!("Patient?identifier={MRN_A}|A100")).await;
    let patient_id = patient["id"].as_str().unwrap().to_owned();
    assert_eq!(patient["birthDate"], "1980-05-17");
    let person = refer_of(&patient);
    assert!(
        person.starts_with("Patient/"),
        "linked by the index: {patient}"
    );
    let encounter = one(&server, &format!("Encounter?subject=Patient/{patient_id}")).await;
    assert_eq!(encounter["status"], "in-progress");

    // An update (A08) changes the same record.
    let a08 = format!(
        "MSH|^~\\&|HIS|HOSPA|PHIP|HUB|20261125090000||ADT^A08^ADT_A01|A-2|P|2.5.1\r\
         PID|1||A100^^^^MR~{rid}^^^^NNCHN||ZHANG^WEI||19800517|M|||Chaoyang Rd 1^^Beijing||13800138000^PRN^PH\r\
         PV1|1|I|W1^101^1||||||||||||||||V1\r"
    );
    let (code, _, errors) = send(&mut client, a08.as_bytes()).await;
    assert_eq!(code, AckCode::Accept, "{errors:?}");
    let updated = one(&server, &format!("Patient?identifier={MRN_A}|A100")).await;
    assert_eq!(updated["id"], patient_id.as_str());
    assert!(
        updated["telecom"].to_string().contains("13800138000"),
        "{updated}"
    );

    // Another hospital registers the same person, in GB18030 with Chinese names: the
    // index links the two records through the resident ID.
    let gb_text = format!(
        "MSH|^~\\&|HIS|协和医院|PHIP|HUB|20261125100000||ADT^A04^ADT_A01|G-1|P|2.5|||||CHN|GB 18030-2000\r\
         PID|1||X7^^^^MR~{rid}^^^^NNCHN||张^伟||19800517|M\r"
    );
    let (gb_bytes, _, unmappable) = encoding_rs::GB18030.encode(&gb_text);
    assert!(!unmappable);
    let (code, _, errors) = send(&mut client, &gb_bytes).await;
    assert_eq!(code, AckCode::Accept, "{errors:?}");
    let other = one(&server, "Patient?identifier=X7").await;
    assert_eq!(other["name"][0]["family"], "张");
    assert_eq!(refer_of(&other), person, "one person across both hospitals");

    // Results (ORU^R01): a report with two observations.
    let oru = "MSH|^~\\&|LIS|HOSPA|PHIP|HUB|20261125110000||ORU^R01^ORU_R01|L-1|P|2.5.1\r\
               PID|1||A100^^^^MR\r\
               OBR|1||R9|24331-1^Lipid panel^LN|||20261125103000|||||||||||||||||F\r\
               OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L^^UCUM|<5.2|H|||F|||20261125103000\r\
               OBX|2|NM|2571-8^Triglyceride^LN||1.4|mmol/L^^UCUM|<1.7|N|||F|||20261125103000\r";
    let (code, _, errors) = send(&mut client, oru.as_bytes()).await;
    assert_eq!(code, AckCode::Accept, "{errors:?}");
    let observations = server
        .get(&format!("Observation?subject=Patient/{patient_id}"))
        .await
        .entries();
    assert_eq!(observations.len(), 2);
    let report = one(
        &server,
        &format!("DiagnosticReport?subject=Patient/{patient_id}"),
    )
    .await;
    assert_eq!(report["result"].as_array().map(Vec::len), Some(2));

    // The same message again (a resend after a lost ACK) is acknowledged, not re-applied.
    let (code, control, _) = send(&mut client, oru.as_bytes()).await;
    assert_eq!((code, control.as_str()), (AckCode::Accept, "L-1"));
    let observations = server
        .get(&format!("Observation?subject=Patient/{patient_id}"))
        .await
        .entries();
    assert_eq!(observations.len(), 2);
    assert!(
        observations.iter().all(|o| o["meta"]["versionId"] == "1"),
        "not written twice"
    );
    assert_eq!(
        server
            .get("Basic?identifier=urn:phip:hl7v2:message:HOSPA|L-1")
            .await
            .entries()
            .len(),
        1
    );

    // A malformed message is refused naming the segment and field, and changes nothing.
    let bad = "MSH|^~\\&|HIS|HOSPA|PHIP|HUB|20261125120000||ADT^A04^ADT_A01|B-1|P|2.5.1\r\
               PID|1||B55^^^^MR||LI^NA||1980-13-45|F\r";
    let (code, _, errors) = send(&mut client, bad.as_bytes()).await;
    assert_ne!(code, AckCode::Accept);
    assert!(
        errors
            .iter()
            .any(|(location, _)| location.starts_with("PID^1^7")),
        "{errors:?}"
    );
    assert!(server
        .get("Patient?identifier=B55")
        .await
        .entries()
        .is_empty());

    // A40: hospital A merges a duplicate registration into A100.
    let dup = "MSH|^~\\&|HIS|HOSPA|PHIP|HUB|20261125130000||ADT^A04^ADT_A01|A-3|P|2.5.1\r\
               PID|1||A099^^^^MR||ZHANG^W||19800517|M\r";
    assert_eq!(send(&mut client, dup.as_bytes()).await.0, AckCode::Accept);
    let duplicate = one(&server, &format!("Patient?identifier={MRN_A}|A099")).await;
    let merge = format!(
        "MSH|^~\\&|HIS|HOSPA|PHIP|HUB|20261125140000||ADT^A40^ADT_A39|A-4|P|2.5.1\r\
         PID|1||A100^^^^MR~{rid}^^^^NNCHN||ZHANG^WEI||19800517|M\r\
         MRG|A099^^^^MR\r"
    );
    let (code, _, errors) = send(&mut client, merge.as_bytes()).await;
    assert_eq!(code, AckCode::Accept, "{errors:?}");
    let retired = server
        .get(&format!("Patient/{}", duplicate["id"].as_str().unwrap()))
        .await
        .body;
    assert_eq!(retired["active"], false);
    assert!(retired["link"]
        .to_string()
        .contains(&format!("Patient/{patient_id}")));
    assert_eq!(
        refer_of(&retired),
        person,
        "the two records are one person now"
    );

    // A merge naming an unknown prior record is refused with 204.
    let unknown = "MSH|^~\\&|HIS|HOSPA|PHIP|HUB|20261125150000||ADT^A40^ADT_A39|A-5|P|2.5.1\r\
                   PID|1||A100^^^^MR\r\
                   MRG|NOBODY^^^^MR\r";
    let (code, _, errors) = send(&mut client, unknown.as_bytes()).await;
    assert_eq!(code, AckCode::Error, "{errors:?}");
    assert!(errors.iter().any(|(_, c)| *c == 204), "{errors:?}");
}

on_both_backends!(mllp_feed_is_applied_through_the_index);
