//! What an emulator's Lambda records, read through typed questions instead of REST paths: a
//! test asks for a function, its configuration at a qualifier, an alias's version, or whether
//! the function is there at all.

use super::moto::signed_call;
use serde_json::Value;

/// The Lambda API at one endpoint (moto's, or a strict layer in front of it).
pub struct LambdaView {
    endpoint: String,
}

impl LambdaView {
    pub fn at(endpoint: &str) -> Self {
        LambdaView {
            endpoint: endpoint.to_owned(),
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        signed_call(&self.endpoint, "lambda", "GET", path, None, None)
    }

    fn get_ok(&self, path: &str) -> Value {
        let (status, v) = self.get(path);
        // moto answers GetAlias with 201.
        assert!((200..300).contains(&status), "GET {path}: {status} {v}");
        v
    }

    /// GetFunction (`Configuration`, `Code`), or `None` where there is no such function.
    pub fn function(&self, name: &str) -> Option<Value> {
        let path = format!("/2015-03-31/functions/{name}");
        match self.get(&path) {
            (404, _) => None,
            (status, v) if (200..300).contains(&status) => Some(v),
            (status, v) => panic!("GET {path}: {status} {v}"),
        }
    }

    /// GetFunction of a function that must be there.
    pub fn existing(&self, name: &str) -> Value {
        self.function(name)
            .unwrap_or_else(|| panic!("no function {name}"))
    }

    /// GetFunctionConfiguration at `qualifier` (`$LATEST` when `None`).
    pub fn configuration(&self, name: &str, qualifier: Option<&str>) -> Value {
        let query = qualifier.map_or(String::new(), |q| format!("?Qualifier={q}"));
        self.get_ok(&format!(
            "/2015-03-31/functions/{name}/configuration{query}"
        ))
    }

    /// GetAlias: `FunctionVersion`, `RoutingConfig`, `Description`.
    pub fn alias(&self, name: &str, alias: &str) -> Value {
        self.get_ok(&format!("/2015-03-31/functions/{name}/aliases/{alias}"))
    }

    /// The names of `name`'s aliases (ListAliases' first page).
    pub fn aliases(&self, name: &str) -> Vec<String> {
        self.names(
            &format!("/2015-03-31/functions/{name}/aliases"),
            "Aliases",
            "Name",
        )
    }

    /// `name`'s versions, `$LATEST` among them (ListVersionsByFunction's first page).
    pub fn versions(&self, name: &str) -> Vec<String> {
        self.names(
            &format!("/2015-03-31/functions/{name}/versions"),
            "Versions",
            "Version",
        )
    }

    fn names(&self, path: &str, field: &str, key: &str) -> Vec<String> {
        let listed = self.get_ok(path);
        listed[field]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no {field} in {listed}"))
            .iter()
            .map(|x| {
                x[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("GET {path}: an entry without {key}: {x}"))
                    .to_owned()
            })
            .collect()
    }
}
