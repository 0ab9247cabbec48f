//! All broker I/O: the AMQP session ([`session`]), the management API ([`mgmt`]), the topology
//! convention ([`topology`]), snapshot collection ([`stats`]), non-destructive browsing
//! ([`browse`]), header reading ([`headers`]), and the AMQP primitives the other layers use
//! ([`amqp`], [`stream`]). Nothing else in the crate talks to RabbitMQ directly.

pub mod amqp;
pub mod browse;
pub mod headers;
pub mod mgmt;
pub mod session;
pub mod stats;
pub mod stream;
pub mod tap;
pub mod topology;
pub mod uri;

pub use session::{BrokerError, Session, connect};
