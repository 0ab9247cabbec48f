//! All broker I/O (docs/architecture.md, "Parts"): the AMQP session ([`session`]), the
//! management API ([`mgmt`]), the metrics source ([`metrics`]: Prometheus counters from
//! [`prometheus`], or the management API's statistics), topology declaration and discovery ([`topology`]; the names come
//! from [`crate::topology::Namespace`]), snapshot collection ([`stats`]), non-destructive
//! browsing ([`browse`]) and finding a dead letter by identity ([`identity`]), the broker engine
//! of moves ([`shovel`]), header reading ([`headers`]), where the gate lives and what it hashes
//! ([`hashgate`]), a sample of what producers send ([`sample`]), the AMQP primitives ([`amqp`],
//! [`stream`]), the live dead-letter tap ([`tap`]), the mover ([`mover`]: the engine of every
//! move), export-and-hold ([`export`]: the engine of a purge) and republish hygiene
//! ([`republish`]: what a message published again keeps, for every engine). These are primitives:
//! they neither guard nor journal — `ops/` does. Nothing outside this module talks to RabbitMQ.

pub mod amqp;
pub mod browse;
pub mod control;
pub mod export;
pub mod hashgate;
pub mod headers;
pub mod identity;
pub mod lock;
pub mod metrics;
pub mod mgmt;
pub mod mover;
pub mod prometheus;
pub mod republish;
pub mod sample;
pub mod server_props;
pub mod session;
pub mod shovel;
pub mod split;
pub mod stats;
pub mod stream;
pub mod tap;
pub mod tls;
pub mod topology;
pub mod uri;

pub use session::{BrokerError, Session, connect};
