//! `GET /`: the digit page. One self-contained HTML document (inline CSS and JS, no external
//! resource of any kind) embedded in the binary, so that it works offline, behind any API
//! Gateway stage, Function URL or custom domain (it uses relative URLs only), under a strict
//! Content-Security-Policy that allows exactly its own script and style by hash.

use crate::net::spec::{ModelSpec, Preprocess};
use base64::Engine;
use sha2::{Digest, Sha256};

const TEMPLATE: &str = include_str!("page/index.html");
const STYLE: &str = include_str!("page/page.css");
const SCRIPT: &str = include_str!("page/page.js");

/// The page for one model: its HTML, validator and headers, built once at init.
#[derive(Debug, Clone)]
pub struct Page {
    /// The document.
    pub html: String,
    /// A strong validator: the page changes only with the model (its hash is on the page)
    /// and with the binary.
    pub etag: String,
    /// The Content-Security-Policy it is served with.
    pub csp: String,
}

/// `text` safe in HTML text and in a double- or single-quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // No text of the model's can form another of the template's placeholders.
            '{' => out.push_str("&#123;"),
            c => out.push(c),
        }
    }
    out
}

/// CSP's hash source for an inline element's exact text.
fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

impl Page {
    /// The page of the model `spec`, showing `model_id` (its file's SHA-256) in short: a
    /// canvas for a one-channel digit model, a picture upload for any other, and a bar per
    /// class labelled with the model's labels.
    pub fn new(model_id: &str, spec: &ModelSpec) -> Self {
        let short: String = model_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let draw = spec.input.preprocess == Preprocess::Digit && spec.input.channels == 1;
        let seed = spec.source == crate::net::file::seed_spec().source;
        let (title, heading, hint) = if draw {
            (
                "draw a digit".to_owned(),
                "Draw a digit".to_owned(),
                "Draw one digit, or drop a PNG or JPEG picture here.",
            )
        } else {
            (
                format!("{} classes", spec.labels.len()),
                "What is in the picture?".to_owned(),
                "Drop a PNG or JPEG picture here, or upload one.",
            )
        };
        let sub = if seed {
            "A small CNN trained on MNIST answers from an AWS Lambda function.".to_owned()
        } else {
            format!(
                "A CNN imported from {} answers from an AWS Lambda function: {}.",
                spec.source,
                spec.summary()
            )
        };
        let labels = serde_json::to_string(&spec.labels).unwrap_or_else(|_| "[]".into());
        let html = TEMPLATE
            .replace("{{style}}", STYLE)
            .replace("{{script}}", SCRIPT)
            .replace("{{title}}", &escape(&title))
            .replace("{{heading}}", &escape(&heading))
            .replace("{{sub}}", &escape(&sub))
            .replace("{{hint}}", hint)
            .replace("{{mode}}", if draw { "draw" } else { "upload" })
            .replace("{{canvas}}", if draw { "" } else { " hidden" })
            .replace("{{labels}}", &escape(&labels))
            .replace("{{model}}", &short);
        let csp = format!(
            "default-src 'none'; script-src {}; style-src {}; img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            csp_hash(SCRIPT),
            csp_hash(STYLE)
        );
        let etag = format!(
            "\"{}\"",
            &hex::encode(Sha256::digest(html.as_bytes()))[..32]
        );
        Page { html, etag, csp }
    }

    /// Whether an `If-None-Match` header value names this page (a list, or `*`).
    pub fn matches(&self, if_none_match: &str) -> bool {
        if_none_match.split(',').any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag
        })
    }

    /// The headers of both the page and its 304.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("etag", self.etag.clone()),
            ("cache-control", "no-cache".to_owned()),
            ("content-security-policy", self.csp.clone()),
            ("x-content-type-options", "nosniff".to_owned()),
            ("referrer-policy", "no-referrer".to_owned()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> ModelSpec {
        crate::net::file::seed_spec()
    }

    #[test]
    fn the_page_is_self_contained_small_and_names_the_model() {
        let p = Page::new("0123456789abcdef0123", &seed());
        assert!(p.html.len() < 50 * 1024, "{} bytes", p.html.len());
        assert!(p.html.contains(">0123456789ab<"));
        assert!(!p.html.contains("{{"), "every placeholder filled");
        for external in [
            "http://", "https://", "//cdn", "@import", "src=\"/", "href=\"/",
        ] {
            assert!(!p.html.contains(external), "{external} in the page");
        }
        // The script and style the CSP allows are exactly the ones on the page.
        assert!(p.html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(p.html.contains(&format!("<style>{STYLE}</style>")));
        assert!(p.csp.contains(&csp_hash(SCRIPT)) && p.csp.starts_with("default-src 'none'"));
        assert!(!p.csp.contains("unsafe"));
    }

    #[test]
    fn the_etag_follows_the_model_and_if_none_match_is_read_as_a_list() {
        let a = Page::new("aaaa", &seed());
        let b = Page::new("bbbb", &seed());
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.etag, Page::new("aaaa", &seed()).etag);
        assert!(a.matches(&a.etag));
        assert!(a.matches(&format!("\"x\", W/{}", a.etag)));
        assert!(a.matches("*"));
        assert!(!a.matches(&b.etag) && !a.matches(""));
    }

    #[test]
    fn a_hostile_model_id_cannot_inject_markup() {
        let p = Page::new("<script>alert(1)</script>", &seed());
        assert!(!p.html.contains("alert(1)"));
    }

    #[test]
    fn an_imported_model_gets_an_upload_and_its_labels_escaped() {
        let mut spec = seed();
        spec.source = "keras 3.15.1 <b>".into();
        spec.input.channels = 3;
        spec.input.preprocess = Preprocess::Resize;
        spec.labels = vec!["cat".into(), "\"><script>alert(2)</script>".into()];
        let p = Page::new("abc", &spec);
        assert!(p.html.contains("data-mode=\"upload\""));
        assert!(p.html.contains("<canvas id=\"pad\"") && p.html.contains(" hidden></canvas>"));
        assert!(p.html.contains("&quot;cat&quot;"), "labels in the markup");
        assert!(!p.html.contains("alert(2)</script>") && !p.html.contains("<b>"));
        assert!(p.html.contains("keras 3.15.1 &lt;b&gt;"));
        assert!(!p.html.contains("{{"), "every placeholder filled");
        let digits = Page::new("abc", &seed());
        assert!(
            digits.html.contains("data-mode=\"draw\"")
                && !digits.html.contains(" hidden></canvas>")
        );
        assert!(digits.html.contains("trained on MNIST"));
    }
}
