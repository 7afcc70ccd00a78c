//! Templates of the REST sink: URLs and JSON bodies with `{column}` placeholders, parsed once
//! at validation and rendered per change.
//!
//! ```toml
//! url  = "https://crm.example.com/contacts/{id}"              # values percent-encoded
//! body = { email = "{email}", name = "{first} {last}", tier = 3 }
//! ```
//!
//! Rules:
//! - A string that is exactly one placeholder (`"{email}"`) becomes the column's JSON value
//!   with its type (number, string, bool, null, object); a string mixing text and
//!   placeholders becomes a string, each value in its text form (`null` as empty text).
//! - Anything else in a body (numbers, booleans, nested tables and arrays) is sent as written.
//! - `{{` and `}}` are literal braces.
//! - In a URL, each value is percent-encoded as one path segment or query value, so a key
//!   `a/b` cannot reach another path; a null or absent value cannot make a URL (the change is
//!   refused and parked).
//! - A body field whose template needs a column the change did not send (unchanged TOAST) is
//!   left out, so a merging method (`PATCH`) keeps the destination's value; the render reports
//!   that the body is partial.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Column(String),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    parts: Vec<Part>,
}

/// A parsed JSON body template.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A string template.
    Text(Text),
    /// Sent as written.
    Literal(Value),
    /// An array of templates.
    Array(Vec<Body>),
    /// An object of templates, in the order written.
    Object(Vec<(String, Body)>),
}

/// Why a change cannot be rendered (the change is parked with this reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError(pub String);

/// A rendered body.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The JSON value.
    pub value: Value,
    /// Some field was left out because its column was not sent (unchanged TOAST).
    pub partial: bool,
}

impl Text {
    /// Parses `s`; the error names the problem and the fix.
    pub fn parse(s: &str) -> Result<Text, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!(
                                    "template {s:?} has an unclosed {{: write {{column}}, or {{{{ for a literal brace"
                                ))
                            }
                            Some(c) => name.push(c),
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(format!(
                            "template {s:?} has an empty {{}}: name a column inside it"
                        ));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Column(name));
                }
                '}' => {
                    return Err(format!(
                        "template {s:?} has a lone }}: write }}}} for a literal brace"
                    ))
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Text { parts })
    }

    /// The columns it names.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The literal text before the first placeholder (for checking a URL's scheme and host).
    pub fn prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    /// The template with every placeholder replaced by `sample` (for checking a URL).
    pub fn sample(&self, sample: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Column(_) => sample,
            })
            .collect()
    }

    /// Renders a URL: every value percent-encoded. Fails on a null or absent value.
    pub fn render_url(&self, row: &Map<String, Value>) -> Result<String, RenderError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Column(c) => match row.get(c) {
                    None | Some(Value::Null) => {
                        return Err(RenderError(format!(
                            "the URL needs column {c}, which is null or was not sent"
                        )))
                    }
                    Some(v) => encode_component(&text_of(v), &mut out),
                },
            }
        }
        Ok(out)
    }

    /// Renders a body string; `None` if a column it needs was not sent.
    fn render(&self, row: &Map<String, Value>) -> Option<Value> {
        if let [Part::Column(c)] = self.parts.as_slice() {
            return row.get(c).cloned();
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Column(c) => out.push_str(&text_of(row.get(c)?)),
            }
        }
        Some(Value::String(out))
    }
}

/// Percent-encodes every byte but RFC 3986's unreserved ones, so a value is one path
/// segment or query value whatever it holds.
fn encode_component(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A value's text form: strings as they are, `null` empty, the rest as JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Body {
    /// Parses a body written in the config (TOML turned JSON).
    pub fn parse(v: &Value) -> Result<Body, String> {
        Ok(match v {
            Value::String(s) => Body::Text(Text::parse(s)?),
            Value::Array(items) => {
                Body::Array(items.iter().map(Body::parse).collect::<Result<_, _>>()?)
            }
            Value::Object(fields) => Body::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), Body::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => Body::Literal(other.clone()),
        })
    }

    /// The columns it names.
    pub fn columns(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        match self {
            Body::Text(t) => out.extend(t.columns()),
            Body::Literal(_) => {}
            Body::Array(items) => items.iter().for_each(|b| b.collect(out)),
            Body::Object(fields) => fields.iter().for_each(|(_, b)| b.collect(out)),
        }
    }

    /// Renders the body for `row`; fields whose columns were not sent are left out. Columns
    /// absent from `row` and not in `unchanged` (a column dropped at the source) are null.
    pub fn render(&self, row: &Map<String, Value>, unchanged: &[String]) -> Rendered {
        let mut partial = false;
        let value = self
            .render_inner(row, unchanged, &mut partial)
            .unwrap_or(Value::Null);
        Rendered { value, partial }
    }

    fn render_inner(
        &self,
        row: &Map<String, Value>,
        unchanged: &[String],
        partial: &mut bool,
    ) -> Option<Value> {
        match self {
            Body::Text(t) => match t.render(row) {
                Some(v) => Some(v),
                None if t.columns().any(|c| unchanged.iter().any(|u| u == c)) => {
                    *partial = true;
                    None
                }
                None => Some(Value::Null),
            },
            Body::Literal(v) => Some(v.clone()),
            Body::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for b in items {
                    // An array cannot leave out an element: it is left out whole.
                    out.push(b.render_inner(row, unchanged, partial)?);
                }
                Some(Value::Array(out))
            }
            Body::Object(fields) => {
                let mut out = Map::new();
                for (k, b) in fields {
                    if let Some(v) = b.render_inner(row, unchanged, partial) {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Value::Object(out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_placeholders_and_escapes() {
        let t = Text::parse("a{{b}}{ id }-{x}").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), ["id", "x"]);
        assert_eq!(t.prefix(), "a{b}");
        for bad in ["{", "a{b", "}", "{}", "{a{b}}"] {
            let e = Text::parse(bad).unwrap_err();
            assert!(
                e.contains("write") || e.contains("name a column"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn urls_encode_values_and_refuse_nulls() {
        let t = Text::parse("https://x/c/{id}?v={name}").unwrap();
        let url = t
            .render_url(&row(json!({"id": "a/b c", "name": "é&x"})))
            .unwrap();
        assert_eq!(url, "https://x/c/a%2Fb%20c?v=%C3%A9%26x");
        assert_eq!(
            t.render_url(&row(json!({"id": 7, "name": true}))).unwrap(),
            "https://x/c/7?v=true"
        );
        let e = t
            .render_url(&row(json!({"id": null, "name": "n"})))
            .unwrap_err();
        assert!(e.0.contains("column id"), "{e:?}");
    }

    #[test]
    fn bodies_keep_types_and_leave_out_unchanged_columns() {
        let body = Body::parse(&json!({
            "data": {"email": "{email}", "full": "{first} {last}", "n": "{n}", "tier": 3,
                     "tags": ["{first}", "x"]},
            "notes": "{notes}",
        }))
        .unwrap();
        assert_eq!(
            body.columns().into_iter().collect::<Vec<_>>(),
            ["email", "first", "last", "n", "notes"]
        );
        let full = body.render(
            &row(
                json!({"email": "a@b", "first": "Ada", "last": null, "n": 1.5, "notes": {"k": 1}}),
            ),
            &[],
        );
        assert!(!full.partial);
        assert_eq!(
            full.value,
            json!({"data": {"email": "a@b", "full": "Ada ", "n": 1.5, "tier": 3, "tags": ["Ada", "x"]},
                   "notes": {"k": 1}})
        );
        let partial = body.render(
            &row(json!({"email": "a@b", "first": "Ada", "last": "L", "n": 2})),
            &["notes".to_string()],
        );
        assert!(partial.partial);
        assert_eq!(partial.value["data"]["full"], json!("Ada L"));
        assert!(partial.value.get("notes").is_none());
        // A column dropped at the source (neither sent nor unchanged) is null.
        let dropped = body.render(&row(json!({"first": "A", "last": "B", "n": 1})), &[]);
        assert!(!dropped.partial);
        assert_eq!(dropped.value["data"]["email"], Value::Null);
    }
}
