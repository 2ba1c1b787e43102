//! Which route answers a request, from [`crate::routes`]' one table: 404 with the routes
//! named, 405 with `Allow`, CORS preflights answered by the function itself (behind a Function
//! URL or an ALB nothing else answers them), HEAD as GET without a body, the page with its ETag
//! (304 when the client holds it), and `Server-Timing` on every answer.

use super::{HttpRequest, PredictService, MAX_DECODE_TIME};
use crate::api::{clip, Body as ReplyBody, HttpReply};
use crate::routes::{self, Action, Route};
use serde_json::json;
use std::time::Instant;

impl PredictService {
    /// Answers `req`, refusing it (413) if its images are still being decoded at `deadline`
    /// (the invocation's deadline less what answering takes).
    pub fn handle_until(&self, req: HttpRequest<'_>, deadline: Instant) -> HttpReply {
        let start = Instant::now();
        let deadline = deadline.min(start + MAX_DECODE_TIME);
        let mut reply = match routes::at(req.path) {
            None => HttpReply::error(
                404,
                format!(
                    "no route {} {}; the routes are {}",
                    clip(req.method),
                    clip(req.path),
                    routes::summary()
                ),
            ),
            Some(route) if req.method == "OPTIONS" => preflight(route),
            Some(route) if route.answers(req.method) => match route.action {
                Action::Predict => self.predict(req, deadline),
                Action::Health => HttpReply::ok(json!({"status": "ok", "model": self.model_id})),
                Action::Page => self.page(req),
            },
            Some(route) => method_not_allowed(req.method, &clip(req.path), &route.allow()),
        };
        if req.method == "HEAD" {
            reply.body = ReplyBody::Empty;
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        reply
            .headers
            .push(("server-timing", format!("fn;dur={ms:.1};desc=\"function\"")));
        reply
    }

    /// The page, or 304 when the client holds this very page.
    fn page(&self, req: HttpRequest<'_>) -> HttpReply {
        let headers = self.page.headers();
        if req.if_none_match.is_some_and(|tag| self.page.matches(tag)) {
            return HttpReply {
                status: 304,
                body: ReplyBody::Empty,
                headers,
            };
        }
        HttpReply {
            status: 200,
            body: ReplyBody::Text {
                content_type: "text/html; charset=utf-8",
                text: self.page.html.clone(),
            },
            headers,
        }
    }
}

fn method_not_allowed(method: &str, path: &str, allow: &str) -> HttpReply {
    let mut r = HttpReply::error(
        405,
        format!("{} is not allowed on {path}; use {allow}", clip(method)),
    );
    r.headers.push(("allow", allow.to_owned()));
    r
}

/// A CORS preflight answered by the function itself: behind a Function URL or an ALB nothing
/// else answers it.
fn preflight(route: &Route) -> HttpReply {
    let methods = route.allow();
    HttpReply {
        status: 204,
        body: ReplyBody::Empty,
        headers: vec![
            ("allow", methods.clone()),
            ("access-control-allow-origin", "*".to_owned()),
            ("access-control-allow-methods", methods),
            ("access-control-allow-headers", "content-type".to_owned()),
            ("access-control-max-age", "86400".to_owned()),
        ],
    }
}
