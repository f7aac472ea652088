//! The metric names a PromQL expression selects, found without a PromQL
//! parser: enough to check that every query of a dashboard or a rule names
//! metrics the cluster really exports.

use std::collections::BTreeSet;

/// PromQL aggregation operators: keywords, never metric names.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesized list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Other keywords and literals.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// Skip a quoted string starting at `i` (at the quote); the index after it.
fn skip_string(bytes: &[u8], i: usize) -> Result<usize, String> {
    let quote = bytes[i];
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' if quote != b'`' => j += 2,
            b if b == quote => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(format!("unterminated string at byte {i}"))
}

/// Skip from the opening bracket at `i` to after its closing one, stepping
/// over strings (label matchers may contain brackets).
fn skip_brackets(bytes: &[u8], i: usize) -> Result<usize, String> {
    let (open, close) = (
        bytes[i],
        match bytes[i] {
            b'{' => b'}',
            b'[' => b']',
            _ => b')',
        },
    );
    let mut depth = 0;
    let mut j = i;
    while j < bytes.len() {
        match bytes[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(bytes, j)?;
                continue;
            }
            b'$' => return Err(format!("unsubstituted variable at byte {j}")),
            b if b == open => depth += 1,
            b if b == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(format!("unclosed `{}` at byte {i}", open as char))
}

fn next_non_space(bytes: &[u8], mut i: usize) -> Option<(usize, u8)> {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    bytes.get(i).map(|&b| (i, b))
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions (followed by `(`), aggregation operators, keywords, label names
/// in `by (...)`-style lists, or inside `{...}` matchers, `[...]` ranges and
/// strings.
pub fn metric_names(promql: &str) -> Result<BTreeSet<String>, String> {
    let bytes = promql.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' | b'\'' | b'`' => i = skip_string(bytes, i)?,
            b'{' | b'[' => i = skip_brackets(bytes, i)?,
            b'$' => return Err(format!("unsubstituted variable at byte {i} of `{promql}`")),
            b'0'..=b'9' | b'.' => {
                // Numbers and durations (1e3, 0x1f, 5m, 1h30m).
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                let word = &promql[start..i];
                let lower = word.to_ascii_lowercase();
                let next = next_non_space(bytes, i);
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if let Some((at, b'(')) = next {
                        i = skip_brackets(bytes, at)?;
                    }
                } else if AGGREGATIONS.contains(&lower.as_str())
                    || KEYWORDS.contains(&lower.as_str())
                    || matches!(next, Some((_, b'(')))
                {
                    // An operator, keyword or function call.
                } else {
                    names.insert(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    Ok(names)
}
