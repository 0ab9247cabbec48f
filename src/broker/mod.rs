//! All broker I/O: the AMQP session ([`session`]), the management API ([`mgmt`]), the topology
//! convention ([`topology`]), snapshot collection ([`stats`]) and non-destructive browsing
//! ([`browse`]). Nothing else in the crate talks to RabbitMQ directly.

pub mod browse;
pub mod export;
pub mod mgmt;
pub mod mover;
pub mod session;
pub mod stats;
pub mod tap;
pub mod topology;
pub mod uri;

pub use session::{BrokerError, Session, connect};
