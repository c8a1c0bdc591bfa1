//! Where the rules go: the [`PolicyBackend`] trait, nftables (the real data path), an
//! in-memory fake, and the suite both pass.

pub mod fake;
pub mod nftables;
#[cfg(test)]
pub(crate) mod suite;

use crate::rules::PolicyRules;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Nft(#[from] krust_nft::NftError),
    #[error("watching the API: {0}")]
    Watch(String),
}

/// A data path that enforces NetworkPolicies. `sync` replaces everything an earlier sync
/// installed, in one step, so traffic never meets a half-written rule set.
#[async_trait::async_trait]
pub trait PolicyBackend: Send + Sync {
    async fn sync(&self, rules: &PolicyRules) -> Result<(), PolicyError>;
    /// Removes everything this backend installed (`krust agent-reset`), opening all pods.
    async fn cleanup(&self) -> Result<(), PolicyError>;
}
