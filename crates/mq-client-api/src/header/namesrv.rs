//! Name-server headers (spec §4.4).

use super::header;

header! {
    /// Route query (GET_ROUTEINFO_BY_TOPIC, 105).
    GetRouteInfoRequestHeader("GetRouteInfoRequestHeader") {
        /// The topic.
        req topic: String => "topic",
        /// 5.x: ask for standard JSON (quoted map keys).
        opt accept_standard_json_only: bool => "acceptStandardJsonOnly",
    }
}

header! {
    /// Broker registration (REGISTER_BROKER, 103).
    RegisterBrokerRequestHeader("RegisterBrokerRequestHeader") {
        /// Broker name.
        req broker_name: String => "brokerName",
        /// `ip:port` of the broker's main listener.
        req broker_addr: String => "brokerAddr",
        /// Cluster name.
        req cluster_name: String => "clusterName",
        /// `ip:haPort`.
        req ha_server_addr: String => "haServerAddr",
        /// 0 = master.
        req broker_id: i64 => "brokerId",
        /// Whether the body is the compressed form.
        prim compressed: bool => "compressed",
        /// CRC32 of the body masked with 0x7FFFFFFF; 0 = not checked.
        prim body_crc32: i32 => "bodyCrc32",
        /// 5.x: liveness timeout.
        opt heartbeat_timeout_millis: i64 => "heartbeatTimeoutMillis",
        /// 5.x: acting master.
        opt enable_acting_master: bool => "enableActingMaster",
    }
}

header! {
    /// Registration response.
    RegisterBrokerResponseHeader("RegisterBrokerResponseHeader") {
        /// The master's HA address (for slaves).
        opt ha_server_addr: String => "haServerAddr",
        /// The master's address (for slaves).
        opt master_addr: String => "masterAddr",
    }
}

header! {
    /// Broker unregistration (UNREGISTER_BROKER, 104).
    UnregisterBrokerRequestHeader("UnRegisterBrokerRequestHeader") {
        /// Broker name.
        req broker_name: String => "brokerName",
        /// Broker address.
        req broker_addr: String => "brokerAddr",
        /// Cluster name.
        req cluster_name: String => "clusterName",
        /// Broker id.
        req broker_id: i64 => "brokerId",
    }
}

header! {
    /// Store a KV config entry (PUT_KV_CONFIG, 100).
    PutKvConfigRequestHeader("PutKVConfigRequestHeader") {
        /// Namespace, e.g. `ORDER_TOPIC_CONFIG`.
        req namespace: String => "namespace",
        /// Key.
        req key: String => "key",
        /// Value.
        req value: String => "value",
    }
}

header! {
    /// Read or delete a KV config entry (GET_KV_CONFIG 101, DELETE_KV_CONFIG 102).
    GetKvConfigRequestHeader("GetKVConfigRequestHeader") {
        /// Namespace.
        req namespace: String => "namespace",
        /// Key.
        req key: String => "key",
    }
}

header! {
    /// KV config value.
    GetKvConfigResponseHeader("GetKVConfigResponseHeader") {
        /// Value.
        opt value: String => "value",
    }
}
