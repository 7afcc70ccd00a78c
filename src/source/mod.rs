//! The source kinds, each implementing `engine::Source` on its settings: what is particular to
//! PostgreSQL ([`postgres`]) and to MySQL/MariaDB ([`mysql`]) in checking, preparing,
//! streaming, snapshotting and resuming. The protocols themselves live in the `replication`
//! crate.

pub mod mysql;
pub mod postgres;
mod slot_guard;
