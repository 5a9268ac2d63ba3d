//! A `Subscription` resource, read into what the dispatcher acts on.

use serde_json::Value;

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

/// `Subscription.status`.
pub fn status(resource: &Value) -> &str {
    resource.get("status").and_then(Value::as_str).unwrap_or("")
}

/// `Subscription.error`.
pub fn error(resource: &Value) -> Option<&str> {
    resource.get("error").and_then(Value::as_str)
}

/// Reads and validates a Subscription; the error is the text for `Subscription.error`.
pub fn parse(resource: &Value, allowed_endpoints: &[String]) -> Result<Spec, String> {
    let criteria = resource
        .get("criteria")
        .and_then(Value::as_str)
        .ok_or("Subscription.criteria is missing")?;
    let (resource_type, query) = criteria.split_once('?').unwrap_or((criteria, ""));
    let resource_type = resource_type.trim_start_matches('/');
    if !phip_fhir::r4().is_resource_type(resource_type) {
        return Err(format!(
            "criteria {criteria:?} does not start with a known resource type"
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
        Some("rest-hook") => rest_hook(channel, allowed_endpoints)?,
        Some("websocket") => Channel::Websocket,
        Some(other) => {
            return Err(format!(
                "channel type {other:?} is not supported (rest-hook, websocket)"
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

fn rest_hook(channel: &Value, allowed_endpoints: &[String]) -> Result<Channel, String> {
    let endpoint = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .ok_or("a rest-hook channel needs channel.endpoint")?;
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("channel.endpoint {endpoint:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "channel.endpoint {endpoint:?} must be an http or https URL"
        ));
    }
    if !allowed_endpoints.is_empty() && !allowed_endpoints.iter().any(|p| endpoint.starts_with(p)) {
        return Err(format!(
            "channel.endpoint {endpoint:?} is not on this server's list of allowed endpoints"
        ));
    }
    let mut headers = Vec::new();
    for header in channel
        .get("header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = header.as_str().ok_or("channel.header must be strings")?;
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| format!("channel.header {text:?} is not \"Name: value\""))?;
        let name = name.trim();
        let value = value.trim();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(value).is_err()
        {
            return Err(format!(
                "channel.header {text:?} is not a valid HTTP header"
            ));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    let payload = match channel.get("payload").and_then(Value::as_str) {
        None | Some("") => None,
        Some(mime @ ("application/fhir+json" | "application/json")) => Some(mime.to_owned()),
        Some(other) => {
            return Err(format!(
                "channel.payload {other:?} is not supported (application/fhir+json, or none)"
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
            let error = parse(&sub(channel), &[]).unwrap_err();
            assert!(error.contains(fragment), "{error}");
        }
        let error = parse(
            &json!({"criteria": "Nonsense?x=1", "channel": {"type": "websocket"}}),
            &[],
        )
        .unwrap_err();
        assert!(error.contains("resource type"), "{error}");
    }

    #[test]
    fn allow_list_limits_endpoints() {
        let allowed = vec!["https://partner.example/".to_owned()];
        let ok = sub(json!({"type": "rest-hook", "endpoint": "https://partner.example/hook"}));
        let bad = sub(json!({"type": "rest-hook", "endpoint": "http://169.254.169.254/"}));
        assert!(parse(&ok, &allowed).is_ok());
        assert!(parse(&bad, &allowed).unwrap_err().contains("allowed"));
    }
}
