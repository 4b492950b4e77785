//! The clients' side of the broker: heartbeats, the watch that drops a connection's clients
//! when it closes, consumer-group change notices and queue locks for orderly consumers.

use std::sync::Arc;
use std::time::Duration;

use mq_client_api::body::{
    ConsumerListByGroupBody, HeartbeatData, TopicConfig, from_json, to_json,
};
use mq_client_api::header::{
    CommandHeader, GetConsumerListByGroupRequestHeader, NotifyConsumerIdsChangedRequestHeader,
    UnregisterClientRequestHeader,
};
use mq_client_api::{RequestCode, ResponseCode};
use mq_remoting::{ConnectionHandle, RemotingCommand, RequestContext};
use tokio::time::Instant;
use tracing::{debug, warn};

use mq_client_api::answer::respond;

use super::CoreHandle;
use crate::state::Member;

impl CoreHandle {
    /// UNREGISTER_CLIENT: a client leaves its producer and consumer groups; the consumers
    /// left in a group are told it changed.
    pub(super) async fn unregister_client(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(UnregisterClientRequestHeader, req);
        if let Some(g) = &h.producer_group {
            self.0.clients.remove_producer(g, &h.client_id);
        }
        if let Some(g) = &h.consumer_group
            && self.0.clients.remove_consumer(g, &h.client_id)
        {
            self.notify_group_changed(g).await;
        }
        respond(req, ResponseCode::SUCCESS, None)
    }

    /// GET_CONSUMER_LIST_BY_GROUP: the client ids of a group's consumers, for rebalancing.
    pub(super) fn consumer_list(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = decode_or_answer!(GetConsumerListByGroupRequestHeader, req);
        let ids = self.0.clients.consumer_ids(&h.consumer_group);
        if ids.is_empty() {
            return respond(
                req,
                ResponseCode::SYSTEM_ERROR,
                Some(format!("no consumer for this group, {}", h.consumer_group)),
            );
        }
        respond(req, ResponseCode::SUCCESS, None).with_body(to_json(&ConsumerListByGroupBody {
            consumer_id_list: ids,
        }))
    }

    pub(crate) async fn heartbeat(
        self: &Arc<Self>,
        ctx: &RequestContext,
        req: &RemotingCommand,
    ) -> RemotingCommand {
        let data: HeartbeatData = match from_json("HeartbeatData", &req.body) {
            Ok(d) => d,
            Err(e) => return respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
        };
        let connection = ctx.connection().clone();
        let member = Member {
            client_id: data.client_id.clone(),
            connection: connection.clone(),
        };
        for p in &data.producer_data_set {
            self.0.clients.add_producer(&p.group_name, member.clone());
        }
        let mut changed = Vec::new();
        for c in &data.consumer_data_set {
            let retry = mq_client_api::names::retry_topic(&c.group_name);
            if self.0.topics.get(&retry).is_none() {
                match self.0.topics.put(TopicConfig::new(retry, 1)) {
                    // Clients find the new retry topic through the name server.
                    Ok(()) => self.spawn_register(),
                    Err(e) => warn!(cause = %e, "creating retry topic failed"),
                }
            }
            if self.0.clients.add_consumer(&c.group_name, member.clone()) {
                changed.push(c.group_name.clone());
            }
        }
        for g in &changed {
            self.notify_group_changed(g).await;
        }
        self.watch_connection(connection);
        respond(req, ResponseCode::SUCCESS, None)
    }

    /// Drops a connection's clients when it closes (one watch per connection).
    pub(crate) fn watch_connection(self: &Arc<Self>, connection: ConnectionHandle) {
        let c = Arc::clone(self);
        self.0
            .watched
            .watch(connection, &self.0.tasks, &self.0.token, |id| async move {
                for g in c.0.clients.connection_closed(id) {
                    c.notify_group_changed(&g).await;
                }
            });
    }

    /// Tells every consumer of `group` that its membership changed (oneway, as Java does).
    pub(crate) async fn notify_group_changed(&self, group: &str) {
        let header = NotifyConsumerIdsChangedRequestHeader {
            consumer_group: group.to_owned(),
        };
        for m in self.0.clients.consumers(group) {
            let req = RemotingCommand::request(RequestCode::NOTIFY_CONSUMER_IDS_CHANGED.0)
                .with_ext_fields(header.to_ext_fields());
            if let Err(e) = m
                .connection
                .invoke_oneway(req, Duration::from_millis(10))
                .await
            {
                debug!(client = %m.client_id, cause = %e, "notify consumer ids changed failed");
            }
        }
    }

    /// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ: a queue is locked by one client of a group at a time,
    /// until it unlocks or the lock is not renewed for 60 s (Java `RebalanceLockManager`).
    pub(crate) fn lock_batch(&self, req: &RemotingCommand) -> RemotingCommand {
        const LOCK_EXPIRY: Duration = Duration::from_secs(60);
        let body: mq_client_api::body::LockBatchRequestBody =
            match from_json("LockBatchRequestBody", &req.body) {
                Ok(b) => b,
                Err(e) => return respond(req, ResponseCode::SYSTEM_ERROR, Some(e.to_string())),
            };
        let now = Instant::now();
        let mut locks = self.0.locks.lock();
        if req.code == RequestCode::UNLOCK_BATCH_MQ.0 {
            for mq in body.mq_set {
                let key = (body.consumer_group.clone(), mq);
                if locks
                    .get(&key)
                    .is_some_and(|(owner, _)| *owner == body.client_id)
                {
                    locks.remove(&key);
                }
            }
            return respond(req, ResponseCode::SUCCESS, None);
        }
        let mut locked = Vec::new();
        for mq in body.mq_set {
            let key = (body.consumer_group.clone(), mq.clone());
            let free = locks
                .get(&key)
                .is_none_or(|(owner, until)| *owner == body.client_id || now >= *until);
            if free {
                locks.insert(key, (body.client_id.clone(), now + LOCK_EXPIRY));
                locked.push(mq);
            }
        }
        respond(req, ResponseCode::SUCCESS, None).with_body(to_json(
            &mq_client_api::body::LockBatchResponseBody {
                lock_ok_mq_set: locked,
            },
        ))
    }
}
