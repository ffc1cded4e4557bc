//! b24-kafka-bridge: Bitrix24 outbound events in, authenticated and
//! normalized Kafka records out.
//!
//! The data path reads top to bottom: [`http`] (routes, body intake) →
//! [`bitrix24`] (wire format, authentication) → [`event`] (normalized
//! message) → [`publish`] (Kafka), wired by [`startup`] from [`settings`].

pub mod admin;
pub mod bitrix24;
pub mod event;
pub mod http;
pub mod metrics;
pub mod publish;
pub mod settings;
pub mod startup;
pub mod telemetry;
