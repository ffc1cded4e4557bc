//! The one error type of the HTTP boundary and its mapping to answers:
//! a stable JSON body `{"error": code, "message": ...}`. Messages are built
//! from our own words and key names, never from request values, so no
//! secret can come back in one.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::bitrix24::{AuthError, ParseError};
use crate::event::NormalizeError;
use crate::publish::{PublishError, SendError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Content-Type must be application/x-www-form-urlencoded or application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body could not be read: {0}")]
    BodyRead(String),
    #[error("the body is not a valid event: {0}")]
    Malformed(#[from] ParseError),
    #[error("the request is not authenticated")]
    Unauthorized(#[source] AuthError),
    #[error("{0}")]
    Unroutable(#[from] NormalizeError),
    #[error("the event was not accepted: {0}")]
    Unavailable(#[from] PublishError),
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    /// Stable, documented error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BodyRead(_) => "malformed_body",
            ApiError::Malformed(ParseError::InvalidUtf8) => "invalid_encoding",
            ApiError::Malformed(_) => "malformed_body",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Unroutable(NormalizeError::NoRoute(_)) => "no_route",
            ApiError::Unroutable(NormalizeError::MissingEvent) => "no_route",
            ApiError::Unroutable(NormalizeError::MissingKey(_)) => "missing_key",
            ApiError::Unroutable(NormalizeError::InvalidTs | NormalizeError::InvalidData) => {
                "invalid_field"
            }
            ApiError::Unavailable(PublishError::Unavailable(SendError::Rejected(_))) => {
                "broker_rejected"
            }
            ApiError::Unavailable(PublishError::Unavailable(_)) => "broker_unavailable",
            ApiError::Unavailable(PublishError::SpoolFull) => "spool_full",
            ApiError::Unavailable(PublishError::Spool(_)) => "spool_unavailable",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// What goes in the log: the client-facing text plus the hidden cause.
    pub fn log_detail(&self) -> String {
        match self {
            ApiError::Unauthorized(reason) => format!("{self}: {reason}"),
            ApiError::Unroutable(NormalizeError::NoRoute(event)) => {
                let event: String = event.chars().take(64).collect();
                format!("no route is configured for event {event:?}")
            }
            other => other.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyRead(_) | ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Unroutable(NormalizeError::InvalidTs | NormalizeError::InvalidData) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Unroutable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Unavailable(_) = self {
            response.insert_header(("Retry-After", "5"));
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}
