//! A `Subscription` resource, read into what the dispatcher acts on.

use serde_json::Value;

use crate::egress::EgressPolicy;

/// Search result parameters that make no sense for matching one changed resource.
const IGNORED_PARAMS: &[&str] = &[
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_contained",
    "_containedType",
    "_format",
    "_pretty",
];

/// How notifications reach the subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// `rest-hook`: an HTTP call to `endpoint`.
    RestHook {
        /// `channel.endpoint` (http or https).
        endpoint: String,
        /// `channel.header`, split into name and value.
        headers: Vec<(String, String)>,
        /// `channel.payload`: `None` sends an empty `POST`; a FHIR JSON MIME type sends
        /// `PUT {endpoint}/{type}/{id}` with the resource, as R4 defines.
        payload: Option<String>,
    },
    /// `websocket`: `ping {id}` to the sockets bound to the subscription.
    Websocket,
}

/// What a Subscription asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Resource type of the criteria.
    pub resource_type: String,
    /// Criteria search parameters (result parameters removed).
    pub params: Vec<(String, String)>,
    /// The channel.
    pub channel: Channel,
}

/// Why a Subscription cannot be accepted: the reason (the text of `Subscription.error`, or of
/// the 422 answering a write) and the element it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// What is wrong, for the client.
    pub reason: String,
    /// The FHIRPath of the element concerned (e.g. `Subscription.channel.endpoint`).
    pub expression: Option<&'static str>,
}

impl Invalid {
    fn at(expression: &'static str, reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            expression: Some(expression),
        }
    }
}

impl From<&str> for Invalid {
    fn from(reason: &str) -> Self {
        Self {
            reason: reason.to_owned(),
            expression: None,
        }
    }
}

impl From<String> for Invalid {
    fn from(reason: String) -> Self {
        Self {
            reason,
            expression: None,
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Headers a `channel.header` entry may not set: they describe the connection or the message
/// framing, which the server alone decides (a `Host` or `Content-Length` of the client's
/// choosing would redirect or split the request), or they carry claims about the client's
/// network that the receiver may trust.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "content-type",
    "content-encoding",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// `Subscription.status`.
pub fn status(resource: &Value) -> &str {
    resource.get("status").and_then(Value::as_str).unwrap_or("")
}

/// `Subscription.error`.
pub fn error(resource: &Value) -> Option<&str> {
    resource.get("error").and_then(Value::as_str)
}

/// Reads and validates a Subscription: rest-hook endpoints must start with one of
/// `allowed_endpoints` (when any are given) and, when a `policy` is given (as when a client
/// writes it), must not be plainly forbidden by it. Delivery checks every connection anyway
/// and reports refusals like any unreachable endpoint.
pub fn parse(
    resource: &Value,
    allowed_endpoints: &[String],
    policy: Option<&EgressPolicy>,
) -> Result<Spec, Invalid> {
    let criteria = resource
        .get("criteria")
        .and_then(Value::as_str)
        .ok_or("Subscription.criteria is missing")?;
    let (resource_type, query) = criteria.split_once('?').unwrap_or((criteria, ""));
    let resource_type = resource_type.trim_start_matches('/');
    if !phip_fhir::r4().is_resource_type(resource_type) {
        return Err(Invalid::at(
            "Subscription.criteria",
            format!("criteria {criteria:?} does not start with a known resource type"),
        ));
    }
    let params = phip_engine::parse_query_string(query)
        .into_iter()
        .filter(|(name, _)| !IGNORED_PARAMS.contains(&name.as_str()))
        .collect();
    let channel = resource
        .get("channel")
        .ok_or("Subscription.channel is missing")?;
    let channel = match channel.get("type").and_then(Value::as_str) {
        Some("rest-hook") => rest_hook(channel, allowed_endpoints, policy)?,
        Some("websocket") => Channel::Websocket,
        Some(other) => {
            return Err(Invalid::at(
                "Subscription.channel.type",
                format!("channel type {other:?} is not supported (rest-hook, websocket)"),
            ))
        }
        None => return Err("Subscription.channel.type is missing".into()),
    };
    Ok(Spec {
        resource_type: resource_type.to_owned(),
        params,
        channel,
    })
}

fn rest_hook(
    channel: &Value,
    allowed_endpoints: &[String],
    policy: Option<&EgressPolicy>,
) -> Result<Channel, Invalid> {
    const ENDPOINT: &str = "Subscription.channel.endpoint";
    const HEADER: &str = "Subscription.channel.header";
    let endpoint = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid::at(ENDPOINT, "a rest-hook channel needs channel.endpoint"))?;
    let url = reqwest::Url::parse(endpoint).map_err(|e| {
        Invalid::at(
            ENDPOINT,
            format!("channel.endpoint {endpoint:?} is not a URL: {e}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Invalid::at(
            ENDPOINT,
            format!("channel.endpoint {endpoint:?} must be an http or https URL"),
        ));
    }
    if !allowed_endpoints.is_empty() && !allowed_endpoints.iter().any(|p| endpoint.starts_with(p)) {
        return Err(Invalid::at(
            ENDPOINT,
            format!(
                "channel.endpoint {endpoint:?} is not on this server's list of allowed endpoints"
            ),
        ));
    }
    if let Some(reason) = policy.and_then(|p| p.literal_refusal(&url)) {
        return Err(Invalid::at(ENDPOINT, reason));
    }
    let mut headers = Vec::new();
    for header in channel
        .get("header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = header
            .as_str()
            .ok_or_else(|| Invalid::at(HEADER, "channel.header must be strings"))?;
        let (name, value) = text.split_once(':').ok_or_else(|| {
            Invalid::at(
                HEADER,
                format!("channel.header {text:?} is not \"Name: value\""),
            )
        })?;
        let name = name.trim();
        let value = value.trim();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(value).is_err()
        {
            return Err(Invalid::at(
                HEADER,
                format!("channel.header {text:?} is not a valid HTTP header"),
            ));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(Invalid::at(
                HEADER,
                format!("channel.header may not set {name}: the server sets the connection and framing headers itself"),
            ));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    let payload = match channel.get("payload").and_then(Value::as_str) {
        None | Some("") => None,
        Some(mime @ ("application/fhir+json" | "application/json")) => Some(mime.to_owned()),
        Some(other) => {
            return Err(Invalid::at(
                "Subscription.channel.payload",
                format!(
                    "channel.payload {other:?} is not supported (application/fhir+json, or none)"
                ),
            ))
        }
    };
    Ok(Channel::RestHook {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        headers,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sub(channel: Value) -> Value {
        json!({"resourceType": "Subscription", "status": "requested",
               "criteria": "Observation?code=http://loinc.org|1234-5&_count=5", "channel": channel})
    }

    #[test]
    fn rest_hook_with_headers_and_payload() {
        let spec = parse(
            &sub(
                json!({"type": "rest-hook", "endpoint": "https://hook.example/in/",
                        "payload": "application/fhir+json", "header": ["Authorization: Bearer x"]}),
            ),
            &[],
            Some(&EgressPolicy::default()),
        )
        .unwrap();
        assert_eq!(spec.resource_type, "Observation");
        assert_eq!(
            spec.params,
            vec![("code".to_owned(), "http://loinc.org|1234-5".to_owned())]
        );
        assert_eq!(
            spec.channel,
            Channel::RestHook {
                endpoint: "https://hook.example/in".into(),
                headers: vec![("Authorization".into(), "Bearer x".into())],
                payload: Some("application/fhir+json".into()),
            }
        );
    }

    #[test]
    fn refuses_what_cannot_be_delivered_safely() {
        for (channel, fragment) in [
            (
                json!({"type": "rest-hook", "endpoint": "file:///etc/passwd"}),
                "http or https",
            ),
            (
                json!({"type": "rest-hook", "endpoint": "ftp://x/y"}),
                "http or https",
            ),
            (json!({"type": "rest-hook"}), "endpoint"),
            (
                json!({"type": "email", "endpoint": "mailto:a@b"}),
                "not supported",
            ),
            (
                json!({"type": "rest-hook", "endpoint": "http://x", "header": ["nocolon"]}),
                "Name: value",
            ),
            (
                json!({"type": "rest-hook", "endpoint": "http://x", "payload": "application/fhir+xml"}),
                "payload",
            ),
        ] {
            let error = parse(&sub(channel), &[], Some(&EgressPolicy::default())).unwrap_err();
            assert!(error.reason.contains(fragment), "{error}");
        }
        let error = parse(
            &json!({"criteria": "Nonsense?x=1", "channel": {"type": "websocket"}}),
            &[],
            Some(&EgressPolicy::default()),
        )
        .unwrap_err();
        assert!(error.reason.contains("resource type"), "{error}");
        assert_eq!(error.expression, Some("Subscription.criteria"));
    }

    #[test]
    fn allow_list_limits_endpoints() {
        let allowed = vec!["https://partner.example/".to_owned()];
        let ok = sub(json!({"type": "rest-hook", "endpoint": "https://partner.example/hook"}));
        let bad = sub(json!({"type": "rest-hook", "endpoint": "http://169.254.169.254/"}));
        let policy = EgressPolicy::default();
        assert!(parse(&ok, &allowed, Some(&policy)).is_ok());
        assert!(parse(&bad, &allowed, Some(&policy))
            .unwrap_err()
            .reason
            .contains("allowed"));
    }

    #[test]
    fn forbidden_addresses_and_reserved_headers_are_refused_naming_the_element() {
        let policy = EgressPolicy::default();
        let error = parse(
            &sub(json!({"type": "rest-hook", "endpoint": "http://0x7f000001:8080/hook"})),
            &[],
            Some(&policy),
        )
        .unwrap_err();
        assert_eq!(error.expression, Some("Subscription.channel.endpoint"));
        assert!(error.reason.contains("loopback"), "{error}");
        let allowing = EgressPolicy::new(vec!["127.0.0.1:8080".parse().expect("rule")]);
        assert!(parse(
            &sub(json!({"type": "rest-hook", "endpoint": "http://0x7f000001:8080/hook"})),
            &[],
            Some(&allowing),
        )
        .is_ok());
        // Stored Subscriptions are left to the connection-time check.
        assert!(parse(
            &sub(json!({"type": "rest-hook", "endpoint": "http://0x7f000001:8080/hook"})),
            &[],
            None,
        )
        .is_ok());
        for header in [
            "Host: internal.example",
            "content-length: 0",
            "Transfer-Encoding: chunked",
            "Connection: keep-alive, Upgrade",
            "Upgrade: websocket",
            "X-Forwarded-For: 10.0.0.1",
        ] {
            let error = parse(
                &sub(
                    json!({"type": "rest-hook", "endpoint": "https://hook.example/in",
                            "header": [header]}),
                ),
                &[],
                None,
            )
            .unwrap_err();
            assert_eq!(
                error.expression,
                Some("Subscription.channel.header"),
                "{header}"
            );
            assert!(error.reason.contains("may not set"), "{error}");
        }
    }
}
