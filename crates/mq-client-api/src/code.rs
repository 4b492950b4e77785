//! Request and response codes (spec §3.1–§3.2) and the mappings built on them: send response →
//! [`SendStatus`] and retry classification (§3.3), pull response → [`PullStatus`] (§3.4).
//!
//! Codes are newtypes over `i32` with named constants, so a code this crate does not know
//! survives as a value instead of failing to parse.

use std::fmt;

macro_rules! codes {
    ($(#[$meta:meta])* $ty:ident { $($(#[$doc:meta])* $name:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
        pub struct $ty(pub i32);

        impl $ty {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The Java constant name, or `None` for a code this crate does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{n}({})", self.0),
                    None => write!(f, "{}", self.0),
                }
            }
        }

        impl From<i32> for $ty {
            fn from(v: i32) -> Self {
                Self(v)
            }
        }
    };
}

codes! {
    /// A request code (Java `RequestCode`).
    RequestCode {
        /// Send with the V1 header.
        SEND_MESSAGE = 10,
        /// Pull messages from a queue.
        PULL_MESSAGE = 11,
        /// Query messages by key.
        QUERY_MESSAGE = 12,
        /// Query a broker's offsets.
        QUERY_BROKER_OFFSET = 13,
        /// Read a consumer group's committed offset.
        QUERY_CONSUMER_OFFSET = 14,
        /// Commit a consumer group's offset.
        UPDATE_CONSUMER_OFFSET = 15,
        /// Create or update a topic on a broker.
        UPDATE_AND_CREATE_TOPIC = 17,
        /// 5.x: create several topics.
        UPDATE_AND_CREATE_TOPIC_LIST = 18,
        /// All topic configs of a broker.
        GET_ALL_TOPIC_CONFIG = 21,
        /// Offset of the first message stored at or after a time.
        SEARCH_OFFSET_BY_TIMESTAMP = 29,
        /// Max offset of a queue.
        GET_MAX_OFFSET = 30,
        /// Min offset of a queue.
        GET_MIN_OFFSET = 31,
        /// Store time of a queue's earliest message.
        GET_EARLIEST_MSG_STORETIME = 32,
        /// One message by commit-log offset.
        VIEW_MESSAGE_BY_ID = 33,
        /// Client heartbeat.
        HEART_BEAT = 34,
        /// A client leaves a group.
        UNREGISTER_CLIENT = 35,
        /// Return a message for redelivery.
        CONSUMER_SEND_MSG_BACK = 36,
        /// Commit or roll back a half message (oneway).
        END_TRANSACTION = 37,
        /// Client ids of a consumer group.
        GET_CONSUMER_LIST_BY_GROUP = 38,
        /// Broker asks a producer about a half message (oneway).
        CHECK_TRANSACTION_STATE = 39,
        /// Broker tells consumers their group changed (oneway).
        NOTIFY_CONSUMER_IDS_CHANGED = 40,
        /// Lock queues for orderly consumption.
        LOCK_BATCH_MQ = 41,
        /// Unlock queues.
        UNLOCK_BATCH_MQ = 42,
        /// All consumer offsets of a broker.
        GET_ALL_CONSUMER_OFFSET = 43,
        /// All delay offsets of a broker.
        GET_ALL_DELAY_OFFSET = 45,
        /// Validate a client's config.
        CHECK_CLIENT_CONFIG = 46,
        /// 5.x: client config.
        GET_CLIENT_CONFIG = 47,
        /// Name server KV put.
        PUT_KV_CONFIG = 100,
        /// Name server KV get.
        GET_KV_CONFIG = 101,
        /// Name server KV delete.
        DELETE_KV_CONFIG = 102,
        /// Broker registers with a name server.
        REGISTER_BROKER = 103,
        /// Broker unregisters.
        UNREGISTER_BROKER = 104,
        /// Route of a topic (Java 4.5.1 spells it `GET_ROUTEINTO_BY_TOPIC`).
        GET_ROUTEINFO_BY_TOPIC = 105,
        /// Cluster membership.
        GET_BROKER_CLUSTER_INFO = 106,
        /// Create or update a subscription group.
        UPDATE_AND_CREATE_SUBSCRIPTIONGROUP = 200,
        /// All subscription groups.
        GET_ALL_SUBSCRIPTIONGROUP_CONFIG = 201,
        /// Topic statistics.
        GET_TOPIC_STATS_INFO = 202,
        /// Connections of a consumer group.
        GET_CONSUMER_CONNECTION_LIST = 203,
        /// Connections of a producer group.
        GET_PRODUCER_CONNECTION_LIST = 204,
        /// Remove write permission of a broker.
        WIPE_WRITE_PERM_OF_BROKER = 205,
        /// Every topic known to a name server.
        GET_ALL_TOPIC_LIST_FROM_NAMESERVER = 206,
        /// Delete a subscription group.
        DELETE_SUBSCRIPTIONGROUP = 207,
        /// Consumption statistics.
        GET_CONSUME_STATS = 208,
        /// Delete a topic on a broker.
        DELETE_TOPIC_IN_BROKER = 215,
        /// Delete a topic on a name server.
        DELETE_TOPIC_IN_NAMESRV = 216,
        /// 5.x: register a topic with a name server.
        REGISTER_TOPIC_IN_NAMESRV = 217,
        /// KV list of a namespace.
        GET_KVLIST_BY_NAMESPACE = 219,
        /// Broker tells a client to reset offsets.
        RESET_CONSUMER_CLIENT_OFFSET = 220,
        /// Broker asks a client for consumer status.
        GET_CONSUMER_STATUS_FROM_CLIENT = 221,
        /// Admin asks a broker to reset offsets.
        INVOKE_BROKER_TO_RESET_OFFSET = 222,
        /// Admin asks a broker for consumer status.
        INVOKE_BROKER_TO_GET_CONSUMER_STATUS = 223,
        /// Topics of a cluster.
        GET_TOPICS_BY_CLUSTER = 224,
        /// Groups consuming a topic.
        QUERY_TOPIC_CONSUME_BY_WHO = 300,
        /// Broker asks a client for running info.
        GET_CONSUMER_RUNNING_INFO = 307,
        /// Broker asks a client to consume one message directly.
        CONSUME_MESSAGE_DIRECTLY = 309,
        /// Send with the V2 (single-letter) header.
        SEND_MESSAGE_V2 = 310,
        /// Send a batch with the V2 header.
        SEND_BATCH_MESSAGE = 320,
        /// Consume-queue contents.
        QUERY_CONSUME_QUEUE = 321,
        /// Broker asks a name server for its data version.
        QUERY_DATA_VERSION = 322,
        /// 5.x: resume checking a half message.
        RESUME_CHECK_HALF_MESSAGE = 323,
        /// 5.x: request-reply reply.
        SEND_REPLY_MESSAGE = 324,
        /// 5.x: request-reply reply, V2 header.
        SEND_REPLY_MESSAGE_V2 = 325,
        /// 5.x: broker pushes a reply to the requester.
        PUSH_REPLY_MESSAGE_TO_CLIENT = 326,
        /// 5.x: one topic's config on a broker (its attributes: the message type).
        GET_TOPIC_CONFIG = 351,
        /// 5.x: one subscription group's config on a broker.
        GET_SUBSCRIPTIONGROUP_CONFIG = 352,
        /// 5.x: lite pull.
        LITE_PULL_MESSAGE = 361,
        /// 5.x: recall a message.
        RECALL_MESSAGE = 370,
        /// 5.x: query assignment.
        QUERY_ASSIGNMENT = 400,
        /// 5.x: set a group's message request mode (pull or pop).
        SET_MESSAGE_REQUEST_MODE = 401,
        /// 5.x: every group's message request mode.
        GET_ALL_MESSAGE_REQUEST_MODE = 402,
        /// 5.x: broker heartbeat.
        BROKER_HEARTBEAT = 904,
        /// 5.x: pop (JSON headers only: above 16 bits).
        POP_MESSAGE = 200_050,
        /// 5.x: ack.
        ACK_MESSAGE = 200_051,
        /// 5.x: peek.
        PEEK_MESSAGE = 200_052,
        /// 5.x: change invisible time.
        CHANGE_MESSAGE_INVISIBLETIME = 200_053,
        /// 5.x: notification.
        NOTIFICATION = 200_054,
        /// 5.x: polling info.
        POLLING_INFO = 200_055,
        /// 5.x: batch ack.
        BATCH_ACK_MESSAGE = 200_151,
    }
}

codes! {
    /// A response code (Java `ResponseCode` and `RemotingSysResponseCode`).
    ResponseCode {
        /// Success.
        SUCCESS = 0,
        /// The responder failed.
        SYSTEM_ERROR = 1,
        /// The responder is overloaded.
        SYSTEM_BUSY = 2,
        /// No processor for the request code.
        REQUEST_CODE_NOT_SUPPORTED = 3,
        /// A transaction operation failed.
        TRANSACTION_FAILED = 4,
        /// Stored, but the disk flush timed out.
        FLUSH_DISK_TIMEOUT = 10,
        /// Stored, but no slave is available.
        SLAVE_NOT_AVAILABLE = 11,
        /// Stored, but the slave sync timed out.
        FLUSH_SLAVE_TIMEOUT = 12,
        /// The message is malformed or too large.
        MESSAGE_ILLEGAL = 13,
        /// The service is not available.
        SERVICE_NOT_AVAILABLE = 14,
        /// The version is not supported.
        VERSION_NOT_SUPPORTED = 15,
        /// Permission denied.
        NO_PERMISSION = 16,
        /// The topic does not exist.
        TOPIC_NOT_EXIST = 17,
        /// The topic exists already.
        TOPIC_EXIST_ALREADY = 18,
        /// No new message.
        PULL_NOT_FOUND = 19,
        /// Pull again at once.
        PULL_RETRY_IMMEDIATELY = 20,
        /// The requested offset is illegal.
        PULL_OFFSET_MOVED = 21,
        /// Nothing matched the query.
        QUERY_NOT_FOUND = 22,
        /// The subscription could not be parsed.
        SUBSCRIPTION_PARSE_FAILED = 23,
        /// The subscription does not exist.
        SUBSCRIPTION_NOT_EXIST = 24,
        /// The subscription is stale.
        SUBSCRIPTION_NOT_LATEST = 25,
        /// The subscription group does not exist.
        SUBSCRIPTION_GROUP_NOT_EXIST = 26,
        /// Filter data does not exist.
        FILTER_DATA_NOT_EXIST = 27,
        /// Filter data is stale.
        FILTER_DATA_NOT_LATEST = 28,
        /// 5.x: invalid parameter.
        INVALID_PARAMETER = 29,
        /// The transaction should commit.
        TRANSACTION_SHOULD_COMMIT = 200,
        /// The transaction should roll back.
        TRANSACTION_SHOULD_ROLLBACK = 201,
        /// The transaction state is unknown (Java spelling `TRANSACTION_STATE_UNKNOW`).
        TRANSACTION_STATE_UNKNOW = 202,
        /// The transaction belongs to another group.
        TRANSACTION_STATE_GROUP_WRONG = 203,
        /// No buyer id.
        NO_BUYER_ID = 204,
        /// Not in the current unit.
        NOT_IN_CURRENT_UNIT = 205,
        /// The consumer is not online.
        CONSUMER_NOT_ONLINE = 206,
        /// Consuming timed out.
        CONSUME_MSG_TIMEOUT = 207,
        /// No message.
        NO_MESSAGE = 208,
        /// 5.x: polling full.
        POLLING_FULL = 209,
        /// 5.x: polling timed out.
        POLLING_TIMEOUT = 210,
        /// 5.x: broker does not exist.
        BROKER_NOT_EXIST = 211,
        /// 5.x: dispatch not complete.
        BROKER_DISPATCH_NOT_COMPLETE = 212,
        /// 5.x: broadcast consumption.
        BROADCAST_CONSUMPTION = 213,
        /// 5.x: flow control.
        FLOW_CONTROL = 215,
        /// 5.x: not the leader for the queue.
        NOT_LEADER_FOR_QUEUE = 501,
        /// 5.x: illegal operation.
        ILLEGAL_OPERATION = 604,
        /// 5.x: the server is going away; retry elsewhere.
        GO_AWAY = 1500,
    }
}

/// Outcome of a send whose message was stored (spec §3.3, Java `SendStatus`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum SendStatus {
    /// Stored and flushed as configured.
    SendOk,
    /// Stored, but the synchronous disk flush timed out.
    FlushDiskTimeout,
    /// Stored, but the synchronous slave replication timed out.
    FlushSlaveTimeout,
    /// Stored, but no slave was available.
    SlaveNotAvailable,
}

impl SendStatus {
    /// The status for a send response code; `None` means the broker refused the message.
    pub fn from_response(code: ResponseCode) -> Option<Self> {
        match code {
            ResponseCode::SUCCESS => Some(Self::SendOk),
            ResponseCode::FLUSH_DISK_TIMEOUT => Some(Self::FlushDiskTimeout),
            ResponseCode::FLUSH_SLAVE_TIMEOUT => Some(Self::FlushSlaveTimeout),
            ResponseCode::SLAVE_NOT_AVAILABLE => Some(Self::SlaveNotAvailable),
            _ => None,
        }
    }

    /// The Java enum name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SendOk => "SEND_OK",
            Self::FlushDiskTimeout => "FLUSH_DISK_TIMEOUT",
            Self::FlushSlaveTimeout => "FLUSH_SLAVE_TIMEOUT",
            Self::SlaveNotAvailable => "SLAVE_NOT_AVAILABLE",
        }
    }
}

/// Broker error codes after which a send is retried (the 5.x `retryResponseCodes` default:
/// the six 4.5.1 codes plus SYSTEM_BUSY and GO_AWAY).
pub const RETRYABLE_SEND_CODES: [ResponseCode; 8] = [
    ResponseCode::TOPIC_NOT_EXIST,
    ResponseCode::SERVICE_NOT_AVAILABLE,
    ResponseCode::SYSTEM_ERROR,
    ResponseCode::SYSTEM_BUSY,
    ResponseCode::NO_PERMISSION,
    ResponseCode::NO_BUYER_ID,
    ResponseCode::NOT_IN_CURRENT_UNIT,
    ResponseCode::GO_AWAY,
];

/// Whether a broker error on a send should be retried (preferably on another broker).
pub fn is_retryable_send_code(code: ResponseCode) -> bool {
    RETRYABLE_SEND_CODES.contains(&code)
}

/// Outcome of a pull (spec §3.4, Java `PullStatus`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum PullStatus {
    /// Messages were found.
    Found,
    /// No new message (possibly after long polling).
    NoNewMsg,
    /// Messages exist but none matched the filter; pull again.
    NoMatchedMsg,
    /// The requested offset is illegal; use the response's next offset.
    OffsetIllegal,
}

impl PullStatus {
    /// The status for a pull response code; `None` means a broker error.
    pub fn from_response(code: ResponseCode) -> Option<Self> {
        match code {
            ResponseCode::SUCCESS => Some(Self::Found),
            ResponseCode::PULL_NOT_FOUND => Some(Self::NoNewMsg),
            ResponseCode::PULL_RETRY_IMMEDIATELY => Some(Self::NoMatchedMsg),
            ResponseCode::PULL_OFFSET_MOVED => Some(Self::OffsetIllegal),
            _ => None,
        }
    }
}

/// Outcome of a pop (Java `PopStatus`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum PopStatus {
    /// Messages were popped.
    Found,
    /// Nothing to pop (after the poll time, when there was one).
    NoNewMsg,
    /// The broker holds as many waiting pops as it may; pop again later.
    PollingFull,
}

impl PopStatus {
    /// The status for a pop response code; `None` means a broker error.
    pub fn from_response(code: ResponseCode) -> Option<Self> {
        match code {
            ResponseCode::SUCCESS => Some(Self::Found),
            ResponseCode::PULL_NOT_FOUND | ResponseCode::POLLING_TIMEOUT => Some(Self::NoNewMsg),
            ResponseCode::POLLING_FULL => Some(Self::PollingFull),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_unknown_values_and_know_their_names() {
        assert_eq!(RequestCode::GET_ROUTEINFO_BY_TOPIC.0, 105);
        assert_eq!(RequestCode(105).name(), Some("GET_ROUTEINFO_BY_TOPIC"));
        assert_eq!(RequestCode(9999).name(), None);
        assert_eq!(ResponseCode(17).to_string(), "TOPIC_NOT_EXIST(17)");
        assert_eq!(ResponseCode(-7).to_string(), "-7");
    }

    #[test]
    fn send_status_mapping() {
        assert_eq!(
            SendStatus::from_response(ResponseCode(0)),
            Some(SendStatus::SendOk)
        );
        assert_eq!(
            SendStatus::from_response(ResponseCode(10)),
            Some(SendStatus::FlushDiskTimeout)
        );
        assert_eq!(
            SendStatus::from_response(ResponseCode(11)),
            Some(SendStatus::SlaveNotAvailable)
        );
        assert_eq!(
            SendStatus::from_response(ResponseCode(12)),
            Some(SendStatus::FlushSlaveTimeout)
        );
        assert_eq!(SendStatus::from_response(ResponseCode(13)), None);
    }

    #[test]
    fn retry_classification() {
        for c in [17, 14, 1, 16, 204, 205, 2, 1500] {
            assert!(is_retryable_send_code(ResponseCode(c)), "{c}");
        }
        for c in [0, 13, 10, 15, 18, 3] {
            assert!(!is_retryable_send_code(ResponseCode(c)), "{c}");
        }
    }

    #[test]
    fn pull_status_mapping() {
        assert_eq!(
            PullStatus::from_response(ResponseCode(0)),
            Some(PullStatus::Found)
        );
        assert_eq!(
            PullStatus::from_response(ResponseCode(19)),
            Some(PullStatus::NoNewMsg)
        );
        assert_eq!(
            PullStatus::from_response(ResponseCode(20)),
            Some(PullStatus::NoMatchedMsg)
        );
        assert_eq!(
            PullStatus::from_response(ResponseCode(21)),
            Some(PullStatus::OffsetIllegal)
        );
        assert_eq!(PullStatus::from_response(ResponseCode(17)), None);
    }
}
