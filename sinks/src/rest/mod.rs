//! The REST sink: one object per source row in a SaaS object API (a CRM's contacts, a search
//! index's documents), kept equal to the source by key from the changelog.
//!
//! ```toml
//! [[sinks]]
//! kind = "rest"
//! name = "crm-contacts"
//! tables = ["public.customers"]
//! upsert = { method = "PUT", url = "https://crm.example.com/contacts/{id}", body = { email = "{email}" } }
//! delete = { method = "DELETE", url = "https://crm.example.com/contacts/{id}" }
//! batch  = { url = "https://crm.example.com/batch", max_items = 100, format = "requests" }
//! headers = { Authorization = { env = "CRM_TOKEN", prefix = "Bearer " } }
//! ```
//!
//! Semantics:
//! - **Per key, in commit order.** The hub never has two batches sharing a key in flight; in
//!   a batch the changes of a key are folded into one operation ([`encoder`]'s table), so one
//!   request per object carries its newest state.
//! - **Unchanged TOAST** columns are never sent as null: a row that lacks them goes through
//!   the `update` template (default: the upsert as `PATCH`) with those fields left out, so
//!   the API keeps its value; an earlier whole row of the same key in the batch fills them.
//! - **Deletes**: 404 and 410 count as done (already gone). **Key changes** move the object
//!   (a delete of the old key, an upsert of the new).
//! - **Refusals** (4xx but 408/429, an item of a batch answer) are parked in the dead-letter
//!   table with every change folded into the object; the others continue. Later changes of a
//!   parked key are delivered as usual, so the object follows the source again from its next
//!   change; `sluice dead-letters retry` re-sends a parked change only while it is still its
//!   key's newest (an older one would overwrite newer state).
//! - **Idempotency**: every request carries an `Idempotency-Key` derived from the changes it
//!   covers; the fold and the chunking are deterministic, so a resend after a crash is the
//!   same request. PUT and DELETE are idempotent by nature.
//! - A truncate cannot be expressed per object: it is parked, never dropped.

pub mod config;
pub mod encoder;
mod request_builder;
mod sink;
pub mod template;

pub use config::{RestConfig, RestSettings};
pub use sink::RestSink;
