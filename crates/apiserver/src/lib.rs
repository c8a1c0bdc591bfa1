//! The krust API server: the Kubernetes REST API over HTTPS on a revisioned store.
//!
//! - `server`: start-up and the request chain (authentication -> authorization ->
//!   admission -> REST storage); `tls` and `pki` for HTTPS and the cluster's certificates;
//!   `auth` for identities and authorizers; `kubelet` for `pods/log`, `exec`, `attach` and
//!   `portforward`, forwarded to the pod's node agent (upgrades tunnelled);
//!   `streamtranslator` serves kubectl's WebSocket protocols over the agent's SPDY, with
//!   `spdy` as its SPDY/3.1 client.
//!   `token` signs and checks service account
//!   tokens, `serviceaccount` serves TokenRequest, bearer authentication and the identity
//!   endpoints (SelfSubjectReview, TokenReview, OIDC discovery); `bootstraptoken`
//!   authenticates bootstrap tokens by their Secrets.
//! - `request`: API paths and query parameters; `options`: `ListOptions` decoded and
//!   validated as upstream does; `rest`: generic storage for every kind, `continuetoken`
//!   its paged lists' tokens;
//!   `strategy`: kind-specific rules; `admission`: mutating admission plugins on create
//!   (DefaultTolerationSeconds, ServiceAccount, DefaultIngressClass, ...); `alloc`: Service
//!   IPs and node ports; `serviceresolver`: a Service reference resolved to an endpoint,
//!   for webhooks.
//! - `cache`: the watch cache every list and watch is served from; `watch`: watch streams;
//!   `compactor`: the store's history compacted every interval, one server at a time.
//! - `discovery` and `openapi`: the documents clients learn the API from.

pub mod admission;
pub mod alloc;
pub mod apiextensions;
pub mod auth;
pub mod body;
pub mod bootstraptoken;
pub mod cache;
pub mod compactor;
pub mod continuetoken;
pub mod discovery;
pub mod glue;
pub mod kubelet;
pub mod managed;
pub mod openapi;
pub mod options;
pub mod pki;
pub mod request;
pub mod rest;
pub mod server;
pub mod serviceaccount;
pub mod serviceresolver;
pub mod spdy;
pub mod strategy;
pub mod streamtranslator;
pub mod tls;
pub mod token;
pub mod watch;

pub use server::{start, Config, Running};
