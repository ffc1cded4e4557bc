//! Request handlers.

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;
use time::OffsetDateTime;

use super::error::ApiError;
use crate::bitrix24::{parse_form, parse_json, Portals};
use crate::event::{normalize, Routes};
use crate::publish::{Outcome, Publisher};

/// Everything a handler needs; shared by all workers.
pub struct AppState {
    pub portals: Portals,
    pub routes: Routes,
    pub publisher: Publisher,
    pub max_body_bytes: usize,
    pub ready_timeout: Duration,
}

/// Mounts the routes; used by the server and by tests alike.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/b24/events")
            .route(web::post().to(post_event))
            .default_service(web::to(method_not_allowed)),
    )
    .service(web::resource("/healthz").route(web::get().to(healthz)))
    .service(web::resource("/readyz").route(web::get().to(readyz)))
    .service(web::resource("/metrics").route(web::get().to(metrics)))
    .default_service(web::to(not_found));
}

#[derive(Debug, Clone, Copy)]
enum BodyKind {
    Form,
    Json,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        "application/json" => Ok(BodyKind::Json),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Keeps attacker-chosen text in log fields short and printable.
fn loggable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

async fn post_event(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut log = RequestLog::default();
    let result = accept_event(&req, payload, &state, &mut log).await;
    log.outcome = match &result {
        Ok((outcome, _)) => outcome.status(),
        Err(e) => e.code(),
    };
    state
        .publisher
        .metrics()
        .event(log.event.as_deref(), log.member_id.as_deref(), log.outcome);
    let response = match result {
        Ok((outcome, id)) => Ok(HttpResponse::Ok().json(Accepted {
            status: outcome.status(),
            id: &id,
        })),
        Err(e) => {
            log.error = Some(e.log_detail());
            Err(e)
        }
    };
    req.extensions_mut().insert(log);
    response
}

/// The 200 answer.
#[derive(serde::Serialize)]
struct Accepted<'a> {
    status: &'static str,
    id: &'a str,
}

/// What a request did, for its one log line and the metrics; filled in by
/// the handler, read by the telemetry middleware.
#[derive(Debug, Default, Clone)]
pub struct RequestLog {
    pub outcome: &'static str,
    pub event: Option<String>,
    pub member_id: Option<String>,
    pub key: Option<String>,
    pub event_id: Option<String>,
    pub error: Option<String>,
}

async fn accept_event(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    log: &mut RequestLog,
) -> Result<(Outcome, String), ApiError> {
    let received_at = OffsetDateTime::now_utc();
    let kind = body_kind(req.headers())?;
    let body = read_body(req, payload, state.max_body_bytes).await?;
    let tree = match kind {
        BodyKind::Form => parse_form(&body)?,
        BodyKind::Json => parse_json(&body)?,
    };
    log.event = tree.str_field("event").map(loggable);
    let verified = state.portals.verify(tree).map_err(ApiError::Unauthorized)?;
    log.member_id = Some(verified.member_id().to_string());
    let record = normalize(verified, &state.routes, received_at)?;
    log.key = Some(loggable(&record.key));
    log.event_id = Some(record.id.clone());
    let id = record.id.clone();
    let outcome = state.publisher.publish(record).await?;
    Ok((outcome, id))
}

/// Alive, unless the producer hit a fatal error: then only a restart helps
/// (the spool keeps what was accepted meanwhile).
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.publisher.sink().fatal_error() {
        None => HttpResponse::Ok().json(json!({ "status": "ok" })),
        Some(reason) => HttpResponse::ServiceUnavailable().json(json!({
            "error": "producer_fatal",
            "message": format!("the Kafka producer failed fatally and needs a restart: {reason}"),
        })),
    }
}

/// Ready when the broker answers, or, while it does not, when the spool can
/// still take events (the bridge keeps its promise either way).
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let publisher = &state.publisher;
    let kafka = publisher.sink().check_ready(state.ready_timeout).await;
    let spool = publisher.spool_stats();
    let kafka_status = match &kafka {
        Ok(()) => "ok".to_owned(),
        Err(reason) => format!("unreachable: {reason}"),
    };
    if kafka.is_ok() || publisher.spool_can_accept() {
        HttpResponse::Ok().json(json!({ "status": "ready", "kafka": kafka_status, "spool": spool }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "error": "not_ready",
            "message": format!("Kafka brokers are not reachable ({kafka_status}) and the spool cannot take events"),
            "kafka": kafka_status,
            "spool": spool,
        }))
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.publisher.render_metrics())
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
