//! What an Invoke request says, checked as Lambda checks it: the function (a name,
//! `name:qualifier` or an ARN) and its qualifier, the invocation type, the payload's size, and
//! the errors of the Invoke API itself (not the function's), in AWS's error shape.

use bytes::Bytes;

/// Invoke's limit on a synchronous request's payload: "6 MB each for request and response"
/// (<https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>).
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;

/// The keys of the error document a runtime posts to `/runtime/invocation/{id}/error`.
const ERROR_KEYS: [&str; 3] = ["errorType", "errorMessage", "stackTrace"];

/// An error of the Invoke API (HTTP status, AWS error type, message), answered as AWS does: a
/// JSON body of `Type` and `message`, the type in `x-amzn-ErrorType`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InvokeError {
    pub status: u16,
    pub kind: String,
    pub message: String,
}

impl InvokeError {
    pub fn new(status: u16, kind: &str, message: impl Into<String>) -> Self {
        InvokeError {
            status,
            kind: kind.to_owned(),
            message: message.into(),
        }
    }

    /// The caller's mistake (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterValueException", message)
    }

    /// The data plane's own failure (an environment that did not start, a pull that failed).
    pub fn service(message: impl Into<String>) -> Self {
        Self::new(502, "ServiceException", message)
    }

    /// The response body: `{"Type": "User" | "Service", "message": …}`.
    pub fn body(&self) -> Bytes {
        let who = if self.status < 500 { "User" } else { "Service" };
        Bytes::from(serde_json::json!({"Type": who, "message": self.message}).to_string())
    }
}

/// How the caller wants the function run (`X-Amz-Invocation-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    /// Run it and answer with its result.
    RequestResponse,
    /// Queue it and answer 202 at once.
    Event,
    /// Check the request and the function, run nothing: 204.
    DryRun,
}

impl InvocationType {
    pub fn parse(header: Option<&str>) -> Result<Self, InvokeError> {
        match header.unwrap_or("RequestResponse") {
            "RequestResponse" => Ok(Self::RequestResponse),
            "Event" => Ok(Self::Event),
            "DryRun" => Ok(Self::DryRun),
            other => Err(InvokeError::invalid(format!(
                "unknown invocation type {other}"
            ))),
        }
    }
}

/// The function and qualifier of `FunctionName` (a name, `name:qualifier`, or a full or
/// partial ARN) and the `Qualifier` parameter, which must agree when both are given.
pub fn function_and_qualifier(
    name: &str,
    qualifier: Option<&str>,
) -> Result<(String, Option<String>), InvokeError> {
    let (function, in_name) = if name.starts_with("arn:") {
        let parts: Vec<&str> = name.split(':').collect();
        if parts.len() < 7 || parts[5] != "function" {
            return Err(InvokeError::invalid(format!("not a function ARN: {name}")));
        }
        (parts[6], parts.get(7).copied())
    } else {
        match name.split_once(':') {
            Some((f, q)) => (f, Some(q)),
            None => (name, None),
        }
    };
    if function.is_empty() {
        return Err(InvokeError::invalid("the function name is empty"));
    }
    let qualifier = qualifier.filter(|q| !q.is_empty());
    let in_name = in_name.filter(|q| !q.is_empty());
    if let (Some(a), Some(b)) = (in_name, qualifier) {
        if a != b {
            return Err(InvokeError::invalid(format!(
                "the qualifier in the name ({a}) and the Qualifier parameter ({b}) differ"
            )));
        }
    }
    Ok((
        function.to_owned(),
        in_name.or(qualifier).map(str::to_owned),
    ))
}

/// Whether `body` is the error document a runtime posts when the function fails: an object
/// with `errorType` and `errorMessage`, perhaps `stackTrace`, nothing else. The RIE answers 200
/// either way; this is how the data plane knows to flag it as Lambda does.
pub fn is_error_document(body: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(doc)) => {
            doc.contains_key("errorType")
                && doc.contains_key("errorMessage")
                && doc.keys().all(|k| ERROR_KEYS.contains(&k.as_str()))
        }
        _ => false,
    }
}

/// `/2015-03-31/functions/{FunctionName}/invocations`'s function name (percent-decoded), or
/// `None` for any other path.
pub fn invoke_path(path: &str) -> Option<String> {
    let name = path
        .strip_prefix("/2015-03-31/functions/")?
        .strip_suffix("/invocations")?;
    (!name.is_empty() && !name.contains('/')).then(|| percent_decode(name))
}

/// The value of `key` in a query string, decoded.
pub fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find_map(|(k, v)| (k == key).then(|| v.into_owned()))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_an_alias_in_the_name_and_an_arn_name_the_same_function() {
        assert_eq!(
            function_and_qualifier("f", Some("live")).unwrap(),
            ("f".into(), Some("live".into()))
        );
        assert_eq!(
            function_and_qualifier("f:3", None).unwrap(),
            ("f".into(), Some("3".into()))
        );
        assert_eq!(
            function_and_qualifier(
                "arn:aws:lambda:us-east-1:123456789012:function:f:live",
                None
            )
            .unwrap(),
            ("f".into(), Some("live".into()))
        );
        assert_eq!(
            function_and_qualifier("arn:aws:lambda:us-east-1:123456789012:function:f", None)
                .unwrap(),
            ("f".into(), None)
        );
    }

    #[test]
    fn disagreeing_qualifiers_and_other_arns_are_the_callers_mistake() {
        let e = function_and_qualifier("f:1", Some("2")).unwrap_err();
        assert_eq!(
            (e.status, e.kind.as_str()),
            (400, "InvalidParameterValueException")
        );
        assert!(
            e.message.contains("(1)") && e.message.contains("(2)"),
            "{e}"
        );
        let e = function_and_qualifier("arn:aws:s3:::bucket", None).unwrap_err();
        assert!(e.message.contains("not a function ARN"), "{e}");
        assert!(function_and_qualifier("", None).is_err());
        // An empty qualifier is none, as Lambda reads it.
        assert_eq!(
            function_and_qualifier("f:", Some("live")).unwrap(),
            ("f".into(), Some("live".into()))
        );
    }

    #[test]
    fn only_a_runtimes_error_document_is_a_function_error() {
        assert!(is_error_document(
            br#"{"errorType":"Oops","errorMessage":"bad"}"#
        ));
        assert!(is_error_document(
            br#"{"errorType":"Oops","errorMessage":"bad","stackTrace":[]}"#
        ));
        // A function's own answer that happens to name an error is not one.
        assert!(!is_error_document(
            br#"{"errorType":"Oops","errorMessage":"bad","statusCode":400}"#
        ));
        assert!(!is_error_document(br#"{"errorMessage":"bad"}"#));
        assert!(!is_error_document(b"not json"));
        assert!(!is_error_document(b"[1,2]"));
    }

    #[test]
    fn the_invoke_path_and_its_query_are_read_decoded() {
        assert_eq!(
            invoke_path("/2015-03-31/functions/lambda-cnn-predict/invocations").as_deref(),
            Some("lambda-cnn-predict")
        );
        assert_eq!(
            invoke_path("/2015-03-31/functions/f%3Alive/invocations").as_deref(),
            Some("f:live")
        );
        assert_eq!(invoke_path("/2015-03-31/functions/f"), None);
        assert_eq!(invoke_path("/2015-03-31/functions//invocations"), None);
        assert_eq!(invoke_path("/2015-03-31/functions/a/b/invocations"), None);
        assert_eq!(
            query_value(Some("Qualifier=live&x=1"), "Qualifier").as_deref(),
            Some("live")
        );
        assert_eq!(query_value(Some("x=1"), "Qualifier"), None);
        assert_eq!(query_value(None, "Qualifier"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn invocation_types_are_the_three_lambda_knows() {
        assert_eq!(
            InvocationType::parse(None).unwrap(),
            InvocationType::RequestResponse
        );
        assert_eq!(
            InvocationType::parse(Some("Event")).unwrap(),
            InvocationType::Event
        );
        assert_eq!(
            InvocationType::parse(Some("DryRun")).unwrap(),
            InvocationType::DryRun
        );
        assert_eq!(
            InvocationType::parse(Some("Later")).unwrap_err().status,
            400
        );
    }

    #[test]
    fn errors_say_whose_they_are() {
        let user: serde_json::Value =
            serde_json::from_slice(&InvokeError::invalid("x").body()).unwrap();
        assert_eq!(user["Type"], "User");
        let service: serde_json::Value =
            serde_json::from_slice(&InvokeError::service("y").body()).unwrap();
        assert_eq!(
            (service["Type"].as_str(), service["message"].as_str()),
            (Some("Service"), Some("y"))
        );
    }
}
