//! A readable HTML view of a FHIR document Bundle: the Composition's title, subject, date,
//! author and its sections' titles and narratives.
//!
//! Everything taken from the document is escaped. Narratives (`text.div`, XHTML) are reduced
//! to their text, with block boundaries kept as line breaks, rather than passed through: a
//! document from another system must not be able to run script or load content in the
//! viewer's browser, and a tag allow-list would be a second, weaker parser.

use std::fmt::Write as _;

use serde_json::Value;

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// The text of an XHTML fragment: tags dropped (block-level ones become line breaks), the
/// content of `script` and `style` dropped, the predefined and numeric entities decoded.
pub fn narrative_text(xhtml: &str) -> String {
    let mut out = String::new();
    let mut rest = xhtml;
    while let Some(start) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..start]));
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else {
            // An unterminated tag: drop the remainder rather than guess.
            rest = "";
            break;
        };
        let tag = after[..end].trim_start_matches('/').trim();
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        rest = &after[end + 1..];
        if (name == "script" || name == "style") && !after.starts_with('/') {
            let close = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = match lower.find(&close) {
                Some(at) => rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..]),
                None => "",
            };
            continue;
        }
        if matches!(
            name.as_str(),
            "p" | "br" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table"
        ) && !out.ends_with('\n')
            && !out.is_empty()
        {
            out.push('\n');
        } else if matches!(name.as_str(), "td" | "th") && !out.ends_with([' ', '\n']) {
            out.push(' ');
        }
    }
    out.push_str(&decode_entities(rest));
    out.trim().to_owned()
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let decoded = after.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let name = &after[1..semi];
            let ch = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            ch.map(|c| (c, semi))
        });
        match decoded {
            Some((ch, semi)) => {
                out.push(ch);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Renders a document Bundle (first entry a Composition) as a standalone HTML page.
/// Returns `None` when the Bundle is not a document.
pub fn render_document(bundle: &Value) -> Option<String> {
    if bundle["type"] != "document" {
        return None;
    }
    let composition = &bundle["entry"][0]["resource"];
    if composition["resourceType"] != "Composition" {
        return None;
    }
    let resolve = |reference: &Value| -> String { display_of(bundle, reference) };
    let title = composition["title"].as_str().unwrap_or("Document");
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>{}</title>\
         <style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}}\
         dt{{font-weight:bold}}.narrative{{white-space:pre-wrap}}</style></head><body>\n<h1>{}</h1>\n<dl>",
        escape_html(title),
        escape_html(title)
    );
    let mut field = |label: &str, value: String| {
        if !value.is_empty() {
            let _ = write!(html, "<dt>{label}</dt><dd>{}</dd>", escape_html(&value));
        }
    };
    field("Type", concept_text(&composition["type"]));
    field("Subject", resolve(&composition["subject"]));
    field(
        "Date",
        composition["date"].as_str().unwrap_or("").to_owned(),
    );
    field(
        "Status",
        composition["status"].as_str().unwrap_or("").to_owned(),
    );
    let authors: Vec<String> = composition["author"]
        .as_array()
        .into_iter()
        .flatten()
        .map(&resolve)
        .filter(|a| !a.is_empty())
        .collect();
    field("Author", authors.join("; "));
    field("Custodian", resolve(&composition["custodian"]));
    html.push_str("</dl>\n");
    if let Some(div) = composition["text"]["div"].as_str() {
        narrative(&mut html, div);
    }
    for section in composition["section"].as_array().into_iter().flatten() {
        render_section(&mut html, section, 2);
    }
    html.push_str("</body></html>\n");
    Some(html)
}

fn render_section(html: &mut String, section: &Value, level: usize) {
    let level = level.min(6);
    html.push_str("<section>");
    let title = section["title"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| concept_text(&section["code"]));
    if !title.is_empty() {
        let _ = write!(html, "<h{level}>{}</h{level}>", escape_html(&title));
    }
    if let Some(div) = section["text"]["div"].as_str() {
        narrative(html, div);
    }
    for child in section["section"].as_array().into_iter().flatten() {
        render_section(html, child, level + 1);
    }
    html.push_str("</section>\n");
}

fn narrative(html: &mut String, div: &str) {
    let _ = write!(
        html,
        "<div class=\"narrative\">{}</div>",
        escape_html(&narrative_text(div))
    );
}

fn concept_text(concept: &Value) -> String {
    concept["text"]
        .as_str()
        .or_else(|| {
            concept["coding"]
                .as_array()?
                .iter()
                .find_map(|c| c["display"].as_str())
        })
        .unwrap_or("")
        .to_owned()
}

/// A reference's display, or the name of the resource it points to inside the Bundle.
fn display_of(bundle: &Value, reference: &Value) -> String {
    if let Some(display) = reference["display"].as_str() {
        return display.to_owned();
    }
    let Some(target) = reference["reference"].as_str() else {
        return String::new();
    };
    let found = bundle["entry"].as_array().into_iter().flatten().find(|e| {
        e["fullUrl"]
            .as_str()
            .is_some_and(|u| u == target || u.ends_with(&format!("/{target}")))
    });
    let Some(resource) = found.map(|e| &e["resource"]) else {
        return target.to_owned();
    };
    if let Some(name) = resource["name"].as_str() {
        return name.to_owned();
    }
    let human = resource["name"].as_array().and_then(|names| names.first());
    if let Some(name) = human {
        if let Some(text) = name["text"].as_str() {
            return text.to_owned();
        }
        let family = name["family"].as_str().unwrap_or("");
        let given: Vec<&str> = name["given"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let joined = format!("{family}{}", given.join(""));
        if !joined.is_empty() {
            return joined;
        }
    }
    target.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn narrative_text_drops_markup_and_script() {
        let text = narrative_text(
            "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>血压 120/80 &amp; 心率 72</p>\
             <script>alert(1)</script><p onclick=\"x()\">二</p>&#x4E09;</div>",
        );
        assert_eq!(text, "血压 120/80 & 心率 72\n二\n三");
    }

    #[test]
    fn rendering_escapes_everything_from_the_document() {
        let bundle = json!({"resourceType": "Bundle", "type": "document", "entry": [
            {"fullUrl": "http://x/fhir/Composition/c", "resource": {"resourceType": "Composition",
              "title": "<script>alert('t')</script>出院小结", "status": "final", "date": "2024-05-01",
              "subject": {"reference": "Patient/p"},
              "section": [{"title": "诊断 <b>", "text": {"div": "<div><img src=x onerror=alert(1)/>&lt;script&gt;alert(2)&lt;/script&gt;</div>"}}]}},
            {"fullUrl": "http://x/fhir/Patient/p", "resource": {"resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}]}}
        ]});
        let html = render_document(&bundle).expect("a document");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt;出院小结"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("<h2>诊断 &lt;b&gt;</h2>"));
        assert!(html.contains("张三"));
    }

    #[test]
    fn only_documents_render() {
        assert!(
            render_document(&json!({"resourceType": "Bundle", "type": "collection"})).is_none()
        );
    }
}
