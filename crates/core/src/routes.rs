//! The predict function's HTTP routes: the one table the handler dispatches on, both API
//! Gateway builders create routes from, CORS allows the methods of, and every help text and
//! error names. A route added here (with its [`Action`] in the handler) is served, exposed and
//! documented everywhere at once. One method per path, one segment deep: that is what the
//! REST API builder makes resources of (a test below keeps the table so).

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The digit page (HTML).
    Page,
    /// A prediction from an image or pixels.
    Predict,
    /// Liveness and the model's id.
    Health,
}

/// One route: a method on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The method API Gateway routes (GET routes also answer HEAD, as HTTP requires).
    pub method: &'static str,
    /// The path, from the root.
    pub path: &'static str,
    /// What the handler does for it.
    pub action: Action,
    /// For people: what the route is.
    pub what: &'static str,
}

/// Every route, the page first.
pub const ROUTES: [Route; 3] = [
    Route {
        method: "GET",
        path: "/",
        action: Action::Page,
        what: "the digit page",
    },
    Route {
        method: "POST",
        path: "/predict",
        action: Action::Predict,
        what: "a digit from a PNG, a JPEG or 784 pixels",
    },
    Route {
        method: "GET",
        path: "/health",
        action: Action::Health,
        what: "the model's id, and that it answers",
    },
];

/// Other paths the handler serves as a route's: the page's conventional file name.
const ALIASES: [(&str, &str); 1] = [("/index.html", "/")];

impl Route {
    /// API Gateway v2's route key, e.g. `POST /predict`.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The path under the root as a REST API resource's path part ("" is the root itself).
    pub fn path_part(&self) -> &'static str {
        self.path.trim_start_matches('/')
    }

    /// Whether the handler serves `method` here: the route's own, and HEAD on a GET route
    /// (HTTP requires it; the answer is the GET's without a body).
    pub fn answers(&self, method: &str) -> bool {
        method == self.method || (self.method == "GET" && method == "HEAD")
    }

    /// The methods the handler answers on this path, for `Allow` and CORS preflights.
    pub fn allow(&self) -> String {
        if self.method == "GET" {
            "GET, HEAD, OPTIONS".to_owned()
        } else {
            format!("{}, OPTIONS", self.method)
        }
    }
}

/// The route serving `path` (any method), trailing slashes and aliases resolved.
pub fn at(path: &str) -> Option<&'static Route> {
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let path = ALIASES
        .iter()
        .find(|(alias, _)| *alias == path)
        .map_or(path, |(_, to)| to);
    ROUTES.iter().find(|r| r.path == path)
}

/// The methods any route uses (CORS's allowed methods), OPTIONS included, each once.
pub fn methods() -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = Vec::new();
    for m in ROUTES.iter().map(|r| r.method).chain(["OPTIONS"]) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    methods
}

/// The routes for people: `GET / (the digit page), POST /predict and GET /health`.
pub fn summary() -> String {
    let keys: Vec<String> = ROUTES
        .iter()
        .map(|r| match r.action {
            Action::Page => format!("{} ({})", r.key(), r.what),
            _ => r.key(),
        })
        .collect();
    match keys.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => keys.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_with_slashes_and_aliases() {
        assert_eq!(at("/predict").map(|r| r.action), Some(Action::Predict));
        assert_eq!(at("/predict/").map(|r| r.action), Some(Action::Predict));
        assert_eq!(at("").map(|r| r.action), Some(Action::Page));
        assert_eq!(at("/index.html").map(|r| r.action), Some(Action::Page));
        assert_eq!(at("/nope"), None);
    }

    #[test]
    fn keys_parts_and_methods_are_derived_from_the_table() {
        let keys: Vec<String> = ROUTES.iter().map(Route::key).collect();
        assert_eq!(keys, ["GET /", "POST /predict", "GET /health"]);
        let parts: Vec<&str> = ROUTES.iter().map(Route::path_part).collect();
        assert_eq!(parts, ["", "predict", "health"]);
        assert_eq!(methods(), ["GET", "POST", "OPTIONS"]);
        assert_eq!(
            summary(),
            "GET / (the digit page), POST /predict and GET /health"
        );
        assert_eq!(at("/predict").unwrap().allow(), "POST, OPTIONS");
        assert_eq!(at("/").unwrap().allow(), "GET, HEAD, OPTIONS");
        assert!(at("/").unwrap().answers("HEAD"));
        assert!(!at("/predict").unwrap().answers("HEAD"));
    }

    #[test]
    fn each_path_is_one_segment_and_has_one_route() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert!(!r.path_part().contains('/'), "{} is nested", r.path);
            assert!(
                ROUTES[..i].iter().all(|other| other.path != r.path),
                "{} has two routes",
                r.path
            );
        }
    }
}
