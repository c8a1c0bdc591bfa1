//! CustomResourceDefinitions' machinery, pure and synchronous, for the API server.
//!
//! - `schema`: one version's `openAPIV3Schema` compiled into a [`schema::Schema`]:
//!   structural checks, pruning, defaulting, OpenAPI validation (through `jsonschema`),
//!   list types and `x-kubernetes-validations` CEL rules.
//! - `crd`: validation of CustomResourceDefinition objects and a typed view of the parts
//!   the server serves from ([`crd::CrdView`]).
//! - `columns`: `additionalPrinterColumns` cells (kubectl-style JSONPath).
//! - `path` (private): field paths and Go-style value rendering for cause messages.
//!
//! Causes use upstream's reasons and wording, since clients see them.

pub mod columns;
pub mod crd;
mod path;
pub mod schema;

pub use schema::Schema;
