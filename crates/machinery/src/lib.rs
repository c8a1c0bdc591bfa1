//! API machinery: what the API server knows about Kubernetes objects, independent of HTTP
//! and storage.
//!
//! - `registry`: the table of served kinds (group, version, names, scope, subresources);
//!   serving a new kind is one entry there plus its validation and defaulting.
//! - `status`: `ApiError`, the typed failures that become Kubernetes `Status` objects.
//! - `object`: small accessors over JSON objects (metadata, labels, resourceVersion).
//! - `codec`: JSON/YAML decoding with field validation; `proto`: Kubernetes protobuf bodies.
//! - `validation`, `defaults`: upstream's per-kind validation and defaulting; `zeros`: the
//!   zero values of required fields that upstream's encoder always writes.
//! - `table`: server-side printing (`kubectl get` columns); `selector`: label and field
//!   selectors.
//! - `storage`: what the PersistentVolume binder and the scheduler share about claims and
//!   volumes (classes, matching, node affinity).
//! - `patch`: JSON, merge and strategic merge patches, server-side apply, managedFields.

pub mod bootstrap;
pub mod codec;
pub mod defaults;
pub mod object;
pub mod patch;
pub mod proto;
pub mod registry;
pub mod selector;
pub mod status;
pub mod storage;
pub mod table;
pub mod validation;
pub mod zeros;

pub use registry::{Registry, ResourceInfo};
pub use status::{ApiError, Cause};
