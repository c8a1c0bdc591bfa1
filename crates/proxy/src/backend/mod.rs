//! Where the rules go: the [`ProxyBackend`] trait, nftables (the real data path), an
//! in-memory fake, and the suite both pass.

pub mod fake;
pub mod nftables;
#[cfg(test)]
pub(crate) mod suite;

use crate::rules::ServiceRules;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Nft(#[from] krust_nft::NftError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("watching the API: {0}")]
    Watch(String),
}

/// A data path for Services. `sync` replaces everything an earlier sync installed, in one
/// step, so traffic never sees a half-written rule set.
#[async_trait::async_trait]
pub trait ProxyBackend: Send + Sync {
    async fn sync(&self, rules: &ServiceRules) -> Result<(), ProxyError>;
    /// Removes everything this backend installed (`krust agent-reset`).
    async fn cleanup(&self) -> Result<(), ProxyError>;
}
