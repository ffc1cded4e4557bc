//! The event tree: what a Bitrix24 request body means, whichever way it was
//! encoded. PHP's `http_build_query` can only express objects, lists and
//! string leaves, so that is all a tree holds; a JSON body is brought to the
//! same shape, so one event has one tree (and one id) however it arrived.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Deepest nesting accepted; Bitrix24 payloads are a few levels deep.
pub const MAX_DEPTH: usize = 16;

/// Why a body is not an event tree. Messages name keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid UTF-8 after percent-decoding")]
    InvalidUtf8,
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("a JSON body must be an object")]
    NotAnObject,
    #[error("key {0:?} appears more than once")]
    DuplicateKey(String),
    #[error("key {0:?} is used both as a value and as a parent of other keys")]
    ConflictingShape(String),
    #[error("key {0:?} is nested deeper than {MAX_DEPTH} levels")]
    TooDeep(String),
}

/// A parsed event: an object at the root, lists only for keys 0..n-1, string
/// leaves. Only the parsers in this module build one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTree(Map<String, Value>);

impl EventTree {
    pub(crate) fn from_root(root: Map<String, Value>) -> Self {
        EventTree(root)
    }

    pub fn root(&self) -> &Map<String, Value> {
        &self.0
    }

    /// A top-level string field, `None` when absent, empty or not a string
    /// (PHP omits nulls, so absent and empty mean the same).
    pub fn str_field(&self, name: &str) -> Option<&str> {
        non_empty(self.0.get(name))
    }

    /// `auth.<name>` as a non-empty string.
    pub fn auth_field(&self, name: &str) -> Option<&str> {
        non_empty(self.0.get("auth").and_then(|a| a.get(name)))
    }

    /// Follows a path of object keys / list indices.
    pub fn lookup<'a>(&'a self, path: &[String]) -> Option<&'a Value> {
        let (first, rest) = path.split_first()?;
        let mut node = self.0.get(first)?;
        for segment in rest {
            node = match node {
                Value::Object(map) => map.get(segment)?,
                Value::Array(list) => list.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

fn non_empty(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

/// Tree under construction: maps keyed by the raw PHP key, turned into lists
/// at the end when their keys are exactly 0..n-1.
#[derive(Debug)]
pub(crate) enum Node {
    Leaf(String),
    Branch(BTreeMap<String, Node>),
}

impl Node {
    pub(crate) fn into_value(self) -> Value {
        match self {
            Node::Leaf(s) => Value::String(s),
            Node::Branch(children) => branch_to_value(children),
        }
    }
}

/// A branch whose keys are exactly "0".."n-1" (canonical decimals) is a list,
/// as PHP and the official Python SDK read it; anything else stays an object.
fn branch_to_value(children: BTreeMap<String, Node>) -> Value {
    let n = children.len();
    let mut slots: Vec<Option<Node>> = Vec::new();
    let is_list = n > 0
        && children.keys().all(|k| match canonical_index(k) {
            Some(i) => i < n,
            None => false,
        });
    if is_list {
        slots.resize_with(n, || None);
        for (k, v) in children {
            if let Some(i) = canonical_index(&k) {
                slots[i] = Some(v);
            }
        }
        Value::Array(slots.into_iter().flatten().map(Node::into_value).collect())
    } else {
        Value::Object(
            children
                .into_iter()
                .map(|(k, v)| (k, v.into_value()))
                .collect(),
        )
    }
}

fn canonical_index(key: &str) -> Option<usize> {
    let canonical =
        key == "0" || (!key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit()));
    if canonical && !key.is_empty() {
        key.parse().ok()
    } else {
        None
    }
}

/// Brings a JSON body to the shape the same event has on the wire: scalars
/// become the strings PHP would send (`true` → "1", `false` → "0", numbers
/// as written), nulls and empty containers disappear (PHP omits them), and
/// lists go through the same 0..n-1 rule as form keys.
pub fn parse_json(body: &[u8]) -> Result<EventTree, ParseError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ParseError::NotAnObject);
    };
    let mut root = BTreeMap::new();
    for (k, v) in map {
        if let Some(node) = json_node(v, &k, 1)? {
            root.insert(k, node);
        }
    }
    match Node::Branch(root).into_value() {
        Value::Object(map) => Ok(EventTree(map)),
        // A root keyed 0..n-1 is not an event; keep it an object anyway.
        Value::Array(list) => Ok(EventTree(
            list.into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        )),
        _ => Err(ParseError::NotAnObject),
    }
}

fn json_node(v: Value, path: &str, depth: usize) -> Result<Option<Node>, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError::TooDeep(path.to_owned()));
    }
    let children: Vec<(String, Value)> = match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => return Ok(Some(Node::Leaf(if b { "1" } else { "0" }.into()))),
        Value::Number(n) => return Ok(Some(Node::Leaf(n.to_string()))),
        Value::String(s) => return Ok(Some(Node::Leaf(s))),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        Value::Object(map) => map.into_iter().collect(),
    };
    let mut branch = BTreeMap::new();
    for (k, v) in children {
        let child_path = format!("{path}[{k}]");
        if let Some(node) = json_node(v, &child_path, depth + 1)? {
            branch.insert(k, node);
        }
    }
    Ok((!branch.is_empty()).then_some(Node::Branch(branch)))
}
