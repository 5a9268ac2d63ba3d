//! Write rules see every way a client can write — create, update, patch, transaction
//! entries — and a refusal reaches the caller with the rule's own status while the whole
//! transaction rolls back.

use std::sync::Arc;

use phip_engine::{
    Engine, EngineConfig, FhirError, FhirResult, Principal, RequestContext, RuleContext, WriteRule,
};
use phip_fhir::IssueType;
use phip_store::{open_store, StoreConfig, WriteRequest};
use serde_json::{json, Value};

/// A Task may not go back from `completed`; a new Task must start as `requested`.
struct NoReopen;

impl WriteRule for NoReopen {
    fn name(&self) -> &str {
        "no-reopen"
    }

    fn applies_to(&self, resource_type: &str) -> bool {
        resource_type == "Task"
    }

    fn check(&self, context: &mut RuleContext<'_>, request: &mut WriteRequest) -> FhirResult<()> {
        let status = |v: Option<&Value>| {
            v.and_then(|r| r.get("status"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let previous = status(context.current.as_ref().and_then(|c| c.resource.as_ref()));
        let next = status(request.resource.as_ref());
        match (previous.as_deref(), next.as_deref()) {
            (None, Some("requested")) | (None, None) => Ok(()),
            (None, Some(other)) => Err(FhirError::new(
                422,
                IssueType::BusinessRule,
                format!("a new Task must be requested, not {other}"),
            )),
            (Some("completed"), Some(s)) if s != "completed" => Err(FhirError::new(
                409,
                IssueType::Conflict,
                format!("Task/{} is completed and cannot become {s}", request.id),
            )),
            _ => Ok(()),
        }
    }
}

fn engine(dir: &std::path::Path) -> Engine {
    let store = open_store(&StoreConfig::Sqlite {
        data_dir: dir.to_path_buf(),
    })
    .expect("store");
    let mut engine = Engine::new(store, EngineConfig::default());
    engine.add_write_rule(Arc::new(NoReopen));
    engine
}

fn ctx() -> RequestContext {
    RequestContext::new("http://test/fhir", Principal::unrestricted("test"))
}

fn task(id: &str, status: &str) -> Value {
    json!({"resourceType": "Task", "id": id, "status": status, "intent": "order"})
}

#[test]
fn rules_refuse_every_kind_of_write_with_their_own_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let ctx = ctx();

    let err = engine
        .create(&ctx, "Task", task("x", "completed"), None)
        .expect_err("create as completed");
    assert_eq!(err.status, 422);

    engine
        .update(&ctx, "Task", "t1", task("t1", "requested"), None)
        .expect("requested");
    engine
        .update(&ctx, "Task", "t1", task("t1", "completed"), None)
        .expect("completed");
    let err = engine
        .update(&ctx, "Task", "t1", task("t1", "in-progress"), None)
        .expect_err("reopen by update");
    assert_eq!(err.status, 409);
    let patch = json!([{"op": "replace", "path": "/status", "value": "ready"}]);
    let err = engine
        .patch(&ctx, "Task", "t1", &patch, None)
        .expect_err("reopen by patch");
    assert_eq!(err.status, 409);

    // A transaction whose second entry breaks the rule writes nothing at all.
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": task("t2", "requested"), "request": {"method": "PUT", "url": "Task/t2"}},
            {"resource": task("t1", "ready"), "request": {"method": "PUT", "url": "Task/t1"}}
        ]
    });
    let err = engine
        .process_bundle(&ctx, bundle)
        .expect_err("transaction refused");
    assert_eq!(err.status, 409, "{err:?}");
    assert_eq!(
        engine
            .read(&ctx, "Task", "t2")
            .expect_err("rolled back")
            .status,
        404
    );
    let current = engine.read(&ctx, "Task", "t1").expect("t1");
    assert_eq!(current.body.expect("body")["status"], "completed");
}
