//! Object-store errors as users read them: what happened (not found, access
//! denied, changed while read, unreachable) before the details, and never a
//! secret (query strings such as SAS signatures are cut from any URL in the
//! text).

use std::error::Error as _;

/// A one-line description of an `object_store` error, redacted.
pub fn describe(e: &object_store::Error) -> String {
    use object_store::Error as E;
    let detail = redact(&chain(e));
    let what = match e {
        E::NotFound { .. } => "not found (404)".to_string(),
        E::PermissionDenied { .. } => {
            "access denied (403): the credentials do not allow this".to_string()
        }
        E::Unauthenticated { .. } => {
            "not authenticated (401/403): check the account key, SAS token or credentials"
                .to_string()
        }
        E::Precondition { .. } => {
            "changed while it was being read (its ETag no longer matches): run the request again"
                .to_string()
        }
        E::AlreadyExists { .. } => "already exists".to_string(),
        _ => {
            // object_store reports other HTTP statuses inside a generic error.
            let lower = detail.to_ascii_lowercase();
            if lower.contains("403") || lower.contains("authorizationfailure") {
                "access denied (403)".to_string()
            } else if lower.contains("404") {
                "not found (404)".to_string()
            } else if lower.contains("error sending request")
                || lower.contains("connection refused")
                || lower.contains("timed out")
            {
                "the storage endpoint did not answer (after retries)".to_string()
            } else {
                "storage request failed".to_string()
            }
        }
    };
    format!("{what}: {detail}")
}

/// The error and its sources, joined.
fn chain(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Cut the query string of every URL in `text` (SAS tokens, signatures).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let token_end = rest[at..]
            .find(|c: char| c.is_whitespace() || c == ')' || c == '"' || c == '\'')
            .map_or(rest.len(), |n| at + n);
        let token = &rest[..token_end];
        match token[at..].find('?') {
            Some(q) => {
                out.push_str(&token[..at + q]);
                out.push_str("?<redacted>");
            }
            None => out.push_str(token),
        }
        rest = &rest[token_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_cut_from_urls() {
        assert_eq!(
            redact("error sending request for url (https://a.blob.core.windows.net/c/x?sv=1&sig=SECRET): refused"),
            "error sending request for url (https://a.blob.core.windows.net/c/x?<redacted>): refused"
        );
        assert_eq!(redact("no url here? fine"), "no url here? fine");
    }
}
