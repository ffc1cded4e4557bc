//! The one integration-test binary: the real application on port 0 against
//! a real Kafka-protocol broker (Tansu), records read back with rdkafka.

mod helpers;

mod cli;
mod durability;
mod events;
mod health;
mod rejections;
