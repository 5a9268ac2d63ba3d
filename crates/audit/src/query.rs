//! Reading the log: `GET /fhir/AuditEvent?patient=…` and `GET /fhir/AuditEvent/{id}`.
//!
//! AuditEvents are served from the log, never from the resource store. Who may see which
//! events is the caller's business (the server restricts a query to a patient or an
//! organisation); the restriction is part of the SQL, so pages are full and cursors exact.
//! Results are newest first and paged by an opaque cursor (the `seq` below which the next page starts), which is
//! stable while records are appended. Each returned AuditEvent is the stored body plus the
//! record's hash in a [`HASH_EXTENSION`] extension, so a client can check it against the chain.

use crate::event::{normalize_organization, normalize_patient};
use crate::log::{to_i64, AuditLog, HASH_EXTENSION};
use crate::AuditError;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::OptionalExtension;
use serde_json::{json, Value};

/// Page size when [`AuditQuery::count`] is absent.
pub const DEFAULT_COUNT: usize = 50;
/// Largest page size served.
pub const MAX_COUNT: usize = 1000;

/// Search criteria; all given criteria must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// A patient concerned: `Patient/123` or `123`.
    pub patient: Option<String>,
    /// The requestor, as stored by [`crate::Agent::key`]: the user's reference (e.g.
    /// `Practitioner/7`), else the token `sub`, else the client id.
    pub agent: Option<String>,
    /// The requestor's organisation (`Organization/7` or `7`), as carried by the agent's
    /// `urn:phip:audit:organization` extension: an organisation's own staff's actions.
    pub organization: Option<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded at or before.
    pub until: Option<DateTime<Utc>>,
    /// Page size (default [`DEFAULT_COUNT`], at most [`MAX_COUNT`]).
    pub count: Option<usize>,
    /// The cursor returned with the previous page.
    pub cursor: Option<String>,
}

impl AuditLog {
    /// AuditEvents matching `q`, newest first, and the cursor of the next page if there is one.
    /// A malformed cursor is [`AuditError::InvalidCursor`].
    pub fn search(&self, q: &AuditQuery) -> Result<(Vec<Value>, Option<String>), AuditError> {
        let count = q.count.unwrap_or(DEFAULT_COUNT).clamp(1, MAX_COUNT);
        let mut sql = String::from("SELECT l.seq, l.body, l.hash FROM audit_log l");
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(p) = &q.patient {
            // Driven by audit_patient's (patient, seq) key: newest first without a sort.
            sql.push_str(" JOIN audit_patient p ON p.seq = l.seq AND p.patient = ?");
            args.push(SqlValue::Text(normalize_patient(p)));
        }
        if let Some(o) = &q.organization {
            sql.push_str(" JOIN audit_org o ON o.seq = l.seq AND o.organization = ?");
            args.push(SqlValue::Text(normalize_organization(o)));
        }
        sql.push_str(" WHERE 1 = 1");
        if let Some(a) = &q.agent {
            sql.push_str(" AND l.agent = ?");
            args.push(SqlValue::Text(a.clone()));
        }
        if let Some(t) = q.since {
            sql.push_str(" AND l.recorded >= ?");
            args.push(SqlValue::Text(
                t.to_rfc3339_opts(SecondsFormat::Millis, true),
            ));
        }
        if let Some(t) = q.until {
            sql.push_str(" AND l.recorded <= ?");
            args.push(SqlValue::Text(
                t.to_rfc3339_opts(SecondsFormat::Millis, true),
            ));
        }
        if let Some(c) = &q.cursor {
            let below: u64 = c
                .parse()
                .map_err(|_| AuditError::InvalidCursor(c.clone()))?;
            sql.push_str(" AND l.seq < ?");
            args.push(SqlValue::Integer(to_i64(below)?));
        }
        sql.push_str(" ORDER BY l.seq DESC LIMIT ?");
        args.push(SqlValue::Integer(to_i64(count as u64 + 1)?));

        let rows: Vec<(i64, String, String)> = self.with_reader(|c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let more = rows.len() > count;
        let mut out = Vec::with_capacity(count.min(rows.len()));
        let mut last = None;
        for (seq, body, hash) in rows.into_iter().take(count) {
            out.push(render(seq, &body, &hash)?);
            last = Some(seq);
        }
        let cursor = if more {
            last.map(|s| s.to_string())
        } else {
            None
        };
        Ok((out, cursor))
    }

    /// The AuditEvent with this `id` (its `seq`), or `None`.
    pub fn read(&self, id: &str) -> Result<Option<Value>, AuditError> {
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(None);
        };
        // Only canonical decimal ids exist ("007" is not record 7).
        if seq.to_string() != id {
            return Ok(None);
        }
        let Ok(seq_i) = i64::try_from(seq) else {
            return Ok(None);
        };
        let row: Option<(String, String)> = self.with_reader(|c| {
            Ok(
                c.prepare_cached("SELECT body, hash FROM audit_log WHERE seq = ?1")?
                    .query_row([seq_i], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?,
            )
        })?;
        row.map(|(body, hash)| render(seq_i, &body, &hash))
            .transpose()
    }
}

/// The stored body with the hash extension appended.
fn render(seq: i64, body: &str, hash: &str) -> Result<Value, AuditError> {
    let mut v: Value = serde_json::from_str(body)
        .map_err(|e| AuditError::Corrupt(format!("audit record {seq}: {e}")))?;
    let ext = json!({ "url": HASH_EXTENSION, "valueString": hash });
    match v.get_mut("extension").and_then(Value::as_array_mut) {
        Some(list) => list.push(ext),
        None => {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("extension".into(), json!([ext]));
            }
        }
    }
    Ok(v)
}
