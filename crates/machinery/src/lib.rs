//! API machinery: what the API server knows about Kubernetes objects, independent of HTTP
//! and storage.
//!
//! - `registry`: the table of served kinds (group, version, names, scope, subresources);
//!   serving a new kind is one entry there plus its validation and defaulting.
//! - `status`: `ApiError`, the typed failures that become Kubernetes `Status` objects.
//! - `object`: small accessors over JSON objects (metadata, labels, resourceVersion).

pub mod codec;
pub mod object;
pub mod registry;
pub mod status;

pub use registry::{Registry, ResourceInfo};
pub use status::{ApiError, Cause};
