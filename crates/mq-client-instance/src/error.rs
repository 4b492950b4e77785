//! [`InstanceError`].

use std::time::Duration;

use mq_client_api::ClientApiError;

use crate::config::ConfigError;
use crate::state::{ServiceState, StateError};

/// A client-instance operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// Caller: the configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Caller: the instance is not in a state that allows this.
    #[error("client instance state not OK: {0}")]
    State(ServiceState),
    /// Caller: a group of this name is registered already.
    #[error("the group [{0}] has been created before, specify another name please")]
    DuplicateGroup(String),
    /// Caller: no name server address is configured.
    #[error("no name server address, please set it")]
    NoNameServer,
    /// Transport: the name server did not answer within the caller's time.
    #[error("name server {addr} did not answer within {waited:?}")]
    NameServerTimeout {
        /// The name server asked (all configured ones, `;`-separated, when none was chosen yet).
        addr: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// Transport or peer: the RPC failed.
    #[error(transparent)]
    Api(#[from] ClientApiError),
}

impl From<StateError> for InstanceError {
    fn from(e: StateError) -> Self {
        Self::State(e.found)
    }
}
