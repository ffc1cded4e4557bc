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
#[derive(Clone, PartialEq, Eq)]
pub struct EventTree(Map<String, Value>);

/// Only the top-level keys: the tree holds tokens.
impl std::fmt::Debug for EventTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTree")
            .field("keys", &self.0.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl EventTree {
    pub fn root(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_root(self) -> Map<String, Value> {
        self.0
    }

    /// A tree rebuilt from one that was parsed here, after removing keys.
    pub fn from_sanitized(root: Map<String, Value>) -> Self {
        EventTree(root)
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
pub(crate) enum Node {
    Leaf(String),
    Branch(Branch),
}

/// An object under construction. `next_index` is what PHP's `a[]=` appends
/// at (one past the largest integer key), kept up to date on insertion so an
/// append costs O(log n), not a scan of the branch.
#[derive(Default)]
pub(crate) struct Branch {
    pub(crate) children: BTreeMap<String, Node>,
    next_index: usize,
}

impl Branch {
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.children.get(key)
    }

    /// Inserts a child that is not there yet.
    pub(crate) fn insert(&mut self, key: String, node: Node) -> &mut Node {
        if let Some(i) = canonical_index(&key) {
            // usize::MAX + 1 would wrap; such a key only blocks appends.
            self.next_index = self.next_index.max(i.saturating_add(1));
        }
        self.children.entry(key).or_insert(node)
    }

    /// The child at `key`, a new empty branch if there is none (the key is
    /// copied only then: most segments name a branch that exists already).
    pub(crate) fn child_or_branch(&mut self, key: std::borrow::Cow<'_, str>) -> &mut Node {
        if self.children.contains_key(key.as_ref()) {
            return self.children.get_mut(key.as_ref()).expect("just checked");
        }
        self.insert(key.into_owned(), Node::Branch(Branch::default()))
    }

    /// The key `a[]` appends at, or `None` when the integer keys are exhausted.
    pub(crate) fn next_index(&self) -> Option<String> {
        (self.next_index < usize::MAX).then(|| self.next_index.to_string())
    }

    fn into_value(self) -> Value {
        branch_to_value(self.children)
    }
}

impl Node {
    pub(crate) fn into_value(self) -> Value {
        match self {
            Node::Leaf(s) => Value::String(s),
            Node::Branch(b) => b.into_value(),
        }
    }
}

/// The root of a parsed body as an event tree (a root keyed 0..n-1 is not
/// an event, but stays an object rather than being rejected here).
pub(crate) fn root_tree(root: Branch) -> EventTree {
    match root.into_value() {
        Value::Object(map) => EventTree(map),
        Value::Array(list) => EventTree(
            list.into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        ),
        _ => EventTree(Map::new()),
    }
}

/// A branch whose keys are exactly "0".."n-1" (canonical decimals) is a list,
/// as PHP and the official Python SDK read it; anything else stays an object.
fn branch_to_value(children: BTreeMap<String, Node>) -> Value {
    let n = children.len();
    let is_list = n > 0
        && children.keys().all(|k| match canonical_index(k) {
            Some(i) => i < n,
            None => false,
        });
    if is_list {
        let mut slots: Vec<Option<Node>> = Vec::new();
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

/// PHP's integer-key rule: "0" or digits without a leading zero or sign.
fn canonical_index(key: &str) -> Option<usize> {
    let canonical = key == "0"
        || (!key.is_empty() && !key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit()));
    if canonical {
        key.parse().ok()
    } else {
        None
    }
}

fn depth(node: &Node) -> usize {
    match node {
        Node::Leaf(_) => 0,
        Node::Branch(b) => 1 + b.children.values().map(depth).max().unwrap_or(0),
    }
}

/// Brings a JSON body to the shape the same event has on the wire: scalars
/// become the strings PHP would send (`true` → "1", `false` → "0", numbers
/// as written), nulls and empty containers disappear (PHP omits them), and
/// lists go through the same 0..n-1 rule as form keys. A key repeated in one
/// object is rejected, as in form bodies (serde_json would keep the last).
pub fn parse_json(body: &[u8]) -> Result<EventTree, ParseError> {
    let parsed: JsonNode =
        serde_json::from_slice(body).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
    let root = match parsed.0 {
        Some(Node::Branch(b)) if parsed.1 => b,
        // `{}` or `{"a": null}`: an object with nothing PHP would send.
        None if parsed.1 => Branch::default(),
        _ => return Err(ParseError::NotAnObject),
    };
    for (k, child) in &root.children {
        if depth(child) >= MAX_DEPTH {
            return Err(ParseError::TooDeep(k.chars().take(64).collect()));
        }
    }
    Ok(root_tree(root))
}

/// A JSON value as a tree node (`None` for what PHP would omit), and whether
/// it was an object.
struct JsonNode(Option<Node>, bool);

impl<'de> serde::Deserialize<'de> for JsonNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

fn leaf(s: String) -> JsonNode {
    JsonNode(Some(Node::Leaf(s)), false)
}

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = JsonNode;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<JsonNode, E> {
        Ok(leaf(if v { "1" } else { "0" }.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<JsonNode, E> {
        Ok(leaf(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<JsonNode, E> {
        Ok(leaf(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<JsonNode, E> {
        Ok(leaf(
            serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string()),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<JsonNode, E> {
        Ok(leaf(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<JsonNode, E> {
        Ok(leaf(v))
    }
    fn visit_unit<E>(self) -> Result<JsonNode, E> {
        Ok(JsonNode(None, false))
    }
    fn visit_none<E>(self) -> Result<JsonNode, E> {
        Ok(JsonNode(None, false))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<JsonNode, A::Error> {
        let mut branch = Branch::default();
        let mut i = 0usize;
        while let Some(JsonNode(node, _)) = seq.next_element::<JsonNode>()? {
            if let Some(node) = node {
                branch.insert(i.to_string(), node);
            }
            i += 1;
        }
        Ok(JsonNode(
            (!branch.children.is_empty()).then_some(Node::Branch(branch)),
            false,
        ))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonNode, A::Error> {
        let mut branch = Branch::default();
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let JsonNode(node, _) = map.next_value::<JsonNode>()?;
            if !seen.insert(key.clone()) {
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format_args!(
                    "key {shown:?} appears more than once"
                )));
            }
            if let Some(node) = node {
                branch.insert(key, node);
            }
        }
        Ok(JsonNode(
            (!branch.children.is_empty()).then_some(Node::Branch(branch)),
            true,
        ))
    }
}
