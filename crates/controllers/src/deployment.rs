//! stub
use crate::{Shared, Shutdown};
use std::sync::Arc;
pub async fn run(_shared: Arc<Shared>, shutdown: Shutdown) {
    shutdown.await
}
