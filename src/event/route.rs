//! Which topic an event goes to and which field keys it.

use std::fmt;

/// A dotted path into the event tree (`data.documentUid`,
/// `data.FIELDS_AFTER.ID`); list elements are addressed by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath(Vec<String>);

impl KeyPath {
    pub fn parse(s: &str) -> Result<Self, String> {
        let segments: Vec<String> = s.split('.').map(str::to_owned).collect();
        if s.is_empty() || segments.iter().any(String::is_empty) {
            return Err(format!("{s:?} is not a dotted path like data.documentUid"));
        }
        Ok(KeyPath(segments))
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    event: String,
    topic: String,
    key: KeyPath,
}

impl Route {
    /// `event` is stored upper-cased: Bitrix24 registers
    /// `OnSignB2eDocumentStatusChanged` but sends `ONSIGNB2EDOCUMENTSTATUSCHANGED`.
    pub fn new(event: &str, topic: String, key: KeyPath) -> Self {
        Route {
            event: event.trim().to_ascii_uppercase(),
            topic,
            key,
        }
    }

    pub fn event(&self) -> &str {
        &self.event
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn key(&self) -> &KeyPath {
        &self.key
    }
}

#[derive(Debug, Clone)]
pub struct Routes(Vec<Route>);

impl Routes {
    pub fn new(routes: Vec<Route>) -> Self {
        Routes(routes)
    }

    /// Case-insensitive match on the event name.
    pub fn find(&self, event: &str) -> Option<&Route> {
        let event = event.trim();
        self.0.iter().find(|r| r.event.eq_ignore_ascii_case(event))
    }

    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|r| r.topic.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_match_case_insensitively() {
        let routes = Routes::new(vec![Route::new(
            "OnSignB2eDocumentStatusChanged",
            "t".into(),
            KeyPath::parse("data.documentUid").unwrap(),
        )]);
        assert!(routes.find("ONSIGNB2EDOCUMENTSTATUSCHANGED").is_some());
        assert!(routes.find("onsignb2edocumentstatuschanged").is_some());
        assert!(routes.find("ONSIGNB2EMEMBERSTATUSCHANGED").is_none());
    }

    #[test]
    fn key_paths() {
        assert_eq!(
            KeyPath::parse("data.FIELDS_AFTER.ID").unwrap().segments(),
            ["data", "FIELDS_AFTER", "ID"]
        );
        assert!(KeyPath::parse("").is_err());
        assert!(KeyPath::parse("data..x").is_err());
    }
}
