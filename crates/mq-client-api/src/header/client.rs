//! Client-management headers (spec §4.7).

use super::header;

header! {
    /// A client leaves a group (UNREGISTER_CLIENT, 35).
    UnregisterClientRequestHeader("UnregisterClientRequestHeader") {
        /// Client id (key spelt `clientID`).
        req client_id: String => "clientID",
        /// Producer group leaving.
        opt producer_group: String => "producerGroup",
        /// Consumer group leaving.
        opt consumer_group: String => "consumerGroup",
    }
}

header! {
    /// A consumer group changed (NOTIFY_CONSUMER_IDS_CHANGED, 40, broker → client oneway).
    NotifyConsumerIdsChangedRequestHeader("NotifyConsumerIdsChangedRequestHeader") {
        /// Consumer group.
        req consumer_group: String => "consumerGroup",
    }
}

header! {
    /// Client ids of a group (GET_CONSUMER_LIST_BY_GROUP, 38).
    GetConsumerListByGroupRequestHeader("GetConsumerListByGroupRequestHeader") {
        /// Consumer group.
        req consumer_group: String => "consumerGroup",
    }
}
