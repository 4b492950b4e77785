//! [`ConsumerError`].

use mq_client_api::ClientApiError;
use mq_client_instance::{ConfigError, InstanceError, ServiceState};

/// A consumer operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// Caller: the consumer is not running, or was started twice.
    #[error("the consumer service state not OK, {0}")]
    State(ServiceState),
    /// Caller: the configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Caller: a subscription expression is malformed.
    #[error("bad subscription {0:?}")]
    Subscription(String),
    /// Caller: the queue is not assigned to this consumer.
    #[error("queue {0} is not assigned to this consumer")]
    NotAssigned(String),
    /// Peer: the route names a broker with no master address.
    #[error("the broker [{0}] has no master address")]
    BrokerNotFound(String),
    /// The local offset file cannot be read or written (a JSON error that cannot be read is
    /// an [`std::io::ErrorKind::InvalidData`] error).
    #[error("local offset file {}: {source}", path.display())]
    OffsetFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Transport or broker failure.
    #[error(transparent)]
    Api(#[from] ClientApiError),
    /// Client-instance failure.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// A gRPC call to a proxy failed (simple consumer).
    #[error(transparent)]
    Grpc(#[from] mq_grpc::GrpcError),
}
