//! Bitrix24's side of the bridge: the wire format of outbound events and
//! their authentication. A request body becomes an [`EventTree`], and only
//! [`Portals::verify`] turns a tree into a [`VerifiedEvent`].

mod auth;
mod form;
mod tree;

pub use auth::{ApplicationToken, AuthError, MemberId, Portal, Portals, VerifiedEvent};
pub use form::parse_form;
pub use tree::{parse_json, EventTree, ParseError, MAX_DEPTH};
