//! Authentication of outbound events. Bitrix24 signs nothing: the only proof
//! is `auth[application_token]`, a secret per portal (`auth[member_id]`) and
//! app. The portal is looked up by member id and the token compared in
//! constant time; no configured portal means nothing is accepted.

use std::collections::HashMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::tree::EventTree;

/// A portal's `member_id`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MemberId(String);

impl MemberId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be at most 128 printable ASCII characters".into());
        }
        Ok(MemberId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A portal's application token. Prints as `[REDACTED]`; the only way to
/// use it is [`ApplicationToken::matches`].
#[derive(Clone)]
pub struct ApplicationToken(SecretString);

impl ApplicationToken {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("the application token must not be empty".into());
        }
        Ok(ApplicationToken(SecretString::from(s.to_owned())))
    }

    /// Constant-time comparison (the length is not secret: tokens are 32
    /// characters by construction).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0
            .expose_secret()
            .as_bytes()
            .ct_eq(candidate.as_bytes())
            .into()
    }
}

impl ApplicationToken {
    /// The token itself. Only `send-sample` uses it, to post as Bitrix24 would.
    pub fn expose_for_sending(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApplicationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[derive(Debug, Clone)]
pub struct Portal {
    pub member_id: MemberId,
    token: ApplicationToken,
}

impl Portal {
    pub fn new(member_id: MemberId, token: ApplicationToken) -> Self {
        Portal { member_id, token }
    }

    pub fn token(&self) -> &ApplicationToken {
        &self.token
    }
}

/// Why a request was not authenticated. The client only ever sees one
/// answer (401 `unauthorized`); the reason goes to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("auth.member_id is missing")]
    MissingMemberId,
    #[error("auth.application_token is missing")]
    MissingToken,
    #[error("auth.member_id is not a configured portal")]
    UnknownPortal,
    #[error("auth.application_token does not match the portal's token")]
    TokenMismatch,
}

/// An event whose application token matched its portal's. Only
/// [`Portals::verify`] builds one.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    tree: EventTree,
    member_id: MemberId,
}

impl VerifiedEvent {
    pub fn tree(&self) -> &EventTree {
        &self.tree
    }

    pub fn member_id(&self) -> &MemberId {
        &self.member_id
    }

    pub fn into_parts(self) -> (EventTree, MemberId) {
        (self.tree, self.member_id)
    }
}

/// The configured portals, by member id.
#[derive(Debug, Clone)]
pub struct Portals(HashMap<String, Portal>);

impl Portals {
    pub fn new(portals: impl IntoIterator<Item = Portal>) -> Self {
        Portals(
            portals
                .into_iter()
                .map(|p| (p.member_id.as_str().to_owned(), p))
                .collect(),
        )
    }

    pub fn contains(&self, member_id: &str) -> bool {
        self.0.contains_key(member_id)
    }

    pub fn verify(&self, tree: EventTree) -> Result<VerifiedEvent, AuthError> {
        let member_id = tree
            .auth_field("member_id")
            .ok_or(AuthError::MissingMemberId)?;
        let given = tree
            .auth_field("application_token")
            .ok_or(AuthError::MissingToken)?;
        let portal = self.0.get(member_id).ok_or(AuthError::UnknownPortal)?;
        if !portal.token.matches(given) {
            return Err(AuthError::TokenMismatch);
        }
        let member_id = portal.member_id.clone();
        Ok(VerifiedEvent { tree, member_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitrix24::parse_form;

    fn portals() -> Portals {
        Portals::new([Portal::new(
            MemberId::parse("m1").unwrap(),
            ApplicationToken::parse("right-token").unwrap(),
        )])
    }

    fn verify(body: &str) -> Result<VerifiedEvent, AuthError> {
        portals().verify(parse_form(body.as_bytes()).unwrap())
    }

    #[test]
    fn right_token_for_the_portal_is_accepted() {
        let ev = verify("auth[member_id]=m1&auth[application_token]=right-token").unwrap();
        assert_eq!(ev.member_id().as_str(), "m1");
    }

    #[test]
    fn every_failure_is_told_apart_in_the_log() {
        assert_eq!(
            verify("auth[application_token]=right-token").unwrap_err(),
            AuthError::MissingMemberId
        );
        assert_eq!(
            verify("auth[member_id]=m1").unwrap_err(),
            AuthError::MissingToken
        );
        assert_eq!(
            verify("auth[member_id]=m1&auth[application_token]=").unwrap_err(),
            AuthError::MissingToken
        );
        assert_eq!(
            verify("auth[member_id]=m2&auth[application_token]=right-token").unwrap_err(),
            AuthError::UnknownPortal
        );
        assert_eq!(
            verify("auth[member_id]=m1&auth[application_token]=wrong-token").unwrap_err(),
            AuthError::TokenMismatch
        );
        assert_eq!(
            verify("auth[member_id]=m1&auth[application_token]=right-token-and-more").unwrap_err(),
            AuthError::TokenMismatch
        );
    }

    #[test]
    fn token_outside_auth_does_not_count() {
        assert_eq!(
            verify("member_id=m1&application_token=right-token").unwrap_err(),
            AuthError::MissingMemberId
        );
        assert_eq!(
            verify("auth[member_id]=m1&data[application_token]=right-token").unwrap_err(),
            AuthError::MissingToken
        );
    }

    #[test]
    fn token_never_prints() {
        let p = portals();
        assert!(!format!("{p:?}").contains("right-token"));
    }
}
