//! The HTTP side: routes, body intake and the error mapping.

mod error;
mod routes;

pub use error::ApiError;
pub use routes::{configure, AppState, RequestLog};
