//! Signed records: `$sign` with SM2 (GM/T 0003, SM3 digest) and ES256 into
//! `Provenance.signature`, and `$verify-signature`.

mod common;

use common::{assert_outcome, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn valid(reply: &common::Reply) -> bool {
    reply.body["parameter"][0]["name"] == "valid"
        && reply.body["parameter"][0]["valueBoolean"] == true
}

async fn sign_and_verify_with_sm2_and_es256(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let id = server
        .create(&json!({"resourceType": "Composition", "status": "final",
            "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5", "display": "Discharge summary"}]},
            "date": "2024-05-01", "author": [{"display": "Dr. Hua"}], "title": "出院小结"}))
        .await;
    for alg in ["SM2SM3", "ES256"] {
        let signed = server
            .send(
                Method::POST,
                &format!("Composition/{id}/$sign?alg={alg}"),
                None,
                &[],
            )
            .await;
        assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
        assert_eq!(signed.body["resourceType"], "Provenance");
        assert_eq!(
            signed.body["target"][0]["reference"],
            format!("Composition/{id}/_history/1")
        );
        assert_eq!(signed.body["signature"][0]["sigFormat"], "application/jose");
        let provenance = signed.body["id"].as_str().unwrap().to_owned();
        let check = server
            .get(&format!("Provenance/{provenance}/$verify-signature"))
            .await;
        assert_eq!(check.status, StatusCode::OK, "{}", check.body);
        assert!(valid(&check), "{}", check.body);
        assert!(
            check.body.to_string().contains(alg),
            "reports the algorithm: {}",
            check.body
        );
    }

    // A signature presented for other content does not verify: reuse the signature of
    // version 1 on a Provenance that names version 2.
    let v1 = server
        .send(Method::POST, &format!("Composition/{id}/$sign"), None, &[])
        .await
        .body;
    let mut changed = server.get(&format!("Composition/{id}")).await.body;
    changed["title"] = json!("出院小结（修订）");
    assert_eq!(
        server
            .put(&format!("Composition/{id}"), &changed)
            .await
            .status,
        StatusCode::OK
    );
    let mut forged = v1.clone();
    forged.as_object_mut().unwrap().remove("id");
    forged.as_object_mut().unwrap().remove("meta");
    forged["target"][0]["reference"] = json!(format!("Composition/{id}/_history/2"));
    let forged_id = server.create(&forged).await;
    let check = server
        .post(
            &format!("Provenance/{forged_id}/$verify-signature"),
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    assert_eq!(check.status, StatusCode::OK, "{}", check.body);
    assert!(!valid(&check), "{}", check.body);
    // The original still verifies: it covers version 1 only.
    let v1_check = server
        .get(&format!(
            "Provenance/{}/$verify-signature",
            v1["id"].as_str().unwrap()
        ))
        .await;
    assert!(valid(&v1_check), "{}", v1_check.body);

    assert_outcome(
        &server
            .send(
                Method::POST,
                &format!("Composition/{id}/$sign?alg=RS256"),
                None,
                &[],
            )
            .await,
        400,
    );
    assert_outcome(
        &server
            .send(Method::POST, "Composition/missing/$sign", None, &[])
            .await,
        404,
    );
}

on_both_backends!(sign_and_verify_with_sm2_and_es256);
