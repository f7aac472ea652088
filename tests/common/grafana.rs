//! The Grafana dashboard of deploy/grafana/: its queries and variables, with
//! Grafana's variables substituted the way Grafana would send them to
//! Prometheus.

use super::{deploy, read_text};
use serde_json::Value;
use std::collections::BTreeSet;

/// deploy/grafana/stratus-dashboard.json.
pub fn dashboard() -> Value {
    let path = deploy("grafana/stratus-dashboard.json");
    serde_json::from_str(&read_text(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `expr` in the dashboard with the title of the panel it is in.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    pub fn walk(value: &Value, panel: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                let panel = map
                    .get("title")
                    .and_then(Value::as_str)
                    .filter(|_| map.contains_key("gridPos"))
                    .unwrap_or(panel);
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", Value::String(expr)) => {
                            out.push((panel.to_string(), expr.clone()))
                        }
                        _ => walk(v, panel, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, panel, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], "?", &mut out);
    out
}

/// A query variable: its name and `label_values(SELECTOR, LABEL)`.
pub struct LabelValues {
    pub variable: String,
    pub selector: String,
    pub label: String,
}

/// The dashboard's query variables, each `label_values(SELECTOR, LABEL)`.
pub fn dashboard_variables(dashboard: &Value) -> Result<Vec<LabelValues>, String> {
    let mut out = Vec::new();
    let list = dashboard["templating"]["list"]
        .as_array()
        .ok_or("the dashboard has no templating.list")?;
    for variable in list.iter().filter(|v| v["type"] == "query") {
        let name = variable["name"].as_str().unwrap_or("?").to_string();
        let query = match &variable["query"] {
            Value::String(q) => q.as_str(),
            q => q["query"].as_str().unwrap_or(""),
        };
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .ok_or_else(|| {
                format!("variable ${name}: expected label_values(SELECTOR, LABEL), got `{query}`")
            })?;
        let (selector, label) = inner
            .rsplit_once(',')
            .ok_or_else(|| format!("variable ${name}: `{query}` names no selector"))?;
        out.push(LabelValues {
            variable: name,
            selector: selector.trim().to_string(),
            label: label.trim().to_string(),
        });
    }
    Ok(out)
}

/// Replace Grafana's variables by what Grafana would send: intervals for
/// the built-in ones, `.*` (every value) for the dashboard's own.
pub fn substitute_variables(expr: &str, own: &BTreeSet<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed ${{ in `{expr}`"))?;
                let name = braced[..end].split(':').next().unwrap_or("");
                (name, end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        let value = match name {
            "__rate_interval" => "1m",
            "__interval" => "15s",
            "__range" => "1h",
            _ if own.contains(name) => ".*",
            // `$1` in a label_replace() replacement is PromQL's, not Grafana's.
            _ if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) => {
                out.push('$');
                rest = after;
                continue;
            }
            _ => return Err(format!("unknown variable ${name} in `{expr}`")),
        };
        out.push_str(value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every query of the dashboard, variables substituted: (where, PromQL).
pub fn dashboard_queries(dashboard: &Value) -> Result<Vec<(String, String)>, String> {
    let variables = dashboard_variables(dashboard)?;
    let own: BTreeSet<String> = variables.iter().map(|v| v.variable.clone()).collect();
    let mut queries = Vec::new();
    for (panel, expr) in dashboard_exprs(dashboard) {
        queries.push((
            format!("panel \"{panel}\""),
            substitute_variables(&expr, &own)?,
        ));
    }
    for v in &variables {
        queries.push((
            format!("variable ${}", v.variable),
            substitute_variables(&v.selector, &own)?,
        ));
    }
    Ok(queries)
}
