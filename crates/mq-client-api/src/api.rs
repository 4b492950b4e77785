//! [`ClientApi`]: one async method per RPC the producer, consumer, admin tools and our broker
//! need, over an `mq-remoting` client. Response codes become typed results or a
//! [`ClientApiError::Broker`] that keeps the code and remark as data.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use mq_remoting::{
    ExtFields, LanguageCode, RemotingClient, RemotingCommand, RequestGroup, SerializeType,
};

use crate::body::{
    self, ClusterInfo, ConsumerListByGroupBody, HeartbeatData, KvTable, LockBatchRequestBody,
    LockBatchResponseBody, MessageQueue, RegisterBrokerBody, TopicList, TopicRouteData,
};
use crate::code::{PopStatus, PullStatus, RequestCode, ResponseCode, SendStatus};
use crate::error::ClientApiError;
use crate::header::{
    AckMessageRequestHeader, ChangeInvisibleTimeRequestHeader, ChangeInvisibleTimeResponseHeader,
    CommandHeader, ConsumerSendMsgBackRequestHeader, CreateTopicRequestHeader,
    DeleteSubscriptionGroupRequestHeader, EndTransactionRequestHeader,
    GetConsumerListByGroupRequestHeader, GetEarliestMsgStoretimeRequestHeader,
    GetEarliestMsgStoretimeResponseHeader, GetMaxOffsetRequestHeader, GetMaxOffsetResponseHeader,
    GetMinOffsetRequestHeader, GetMinOffsetResponseHeader, GetRouteInfoRequestHeader,
    GetSubscriptionGroupConfigRequestHeader, PopExtraInfo, PopMessageRequestHeader,
    PopMessageResponseHeader, PullMessageRequestHeader, PullMessageResponseHeader,
    QueryConsumerOffsetRequestHeader, QueryConsumerOffsetResponseHeader, QueryMessageRequestHeader,
    RecallMessageRequestHeader, RecallMessageResponseHeader, RegisterBrokerRequestHeader,
    RegisterBrokerResponseHeader, SearchOffsetRequestHeader, SearchOffsetResponseHeader,
    SendMessageRequestHeader, SendResponseRef, SendV2Fields, UnregisterBrokerRequestHeader,
    UnregisterClientRequestHeader, UpdateConsumerOffsetRequestHeader, ViewMessageRequestHeader,
};
use crate::message::{MessageExt, decode_record, decode_records, property};

/// Settings of a [`ClientApi`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiConfig {
    /// Header serialisation of requests (responses are decoded whatever their type). Default
    /// JSON, what Java sends unless configured otherwise.
    pub serialize_type: SerializeType,
    /// Language announced on heartbeats (other requests say JAVA, as the Java client does).
    pub language: LanguageCode,
    /// Send single messages with SEND_MESSAGE_V2 (default) rather than SEND_MESSAGE.
    pub send_v2: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            serialize_type: SerializeType::Json,
            language: LanguageCode::Java,
            send_v2: true,
        }
    }
}

impl ApiConfig {
    /// Sets the header serialisation.
    #[must_use]
    pub fn with_serialize_type(mut self, ty: SerializeType) -> Self {
        self.serialize_type = ty;
        self
    }

    /// Sets the language announced on heartbeats (default JAVA).
    #[must_use]
    pub fn with_language(mut self, language: LanguageCode) -> Self {
        self.language = language;
        self
    }

    /// Chooses V2 (true) or V1 send headers.
    #[must_use]
    pub fn with_send_v2(mut self, v2: bool) -> Self {
        self.send_v2 = v2;
        self
    }
}

/// A send ready for the wire: header fields, the (possibly compressed or batch-encoded) body,
/// and the client message id(s) to report.
#[derive(Clone, Debug)]
pub struct SendRequest {
    /// Header fields (V1 names; converted to V2 when configured).
    pub header: SendMessageRequestHeader,
    /// Body as sent.
    pub body: Bytes,
    /// `UNIQ_KEY` of the message, or of every message joined by `,` for a batch.
    pub msg_id: String,
    /// The broker the queue belongs to.
    pub broker_name: String,
    /// A reply to a request (`MSG_TYPE=reply`): sent with SEND_REPLY_MESSAGE_V2 (or
    /// SEND_REPLY_MESSAGE), which the broker pushes to the requester.
    pub reply: bool,
}

/// What a successful send reports (spec §3.3). Java: `SendResult`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SendResult {
    /// Stored outcome.
    pub status: SendStatus,
    /// Client message id (`UNIQ_KEY`), comma-joined for a batch.
    pub msg_id: String,
    /// Broker offset id(s).
    pub offset_msg_id: String,
    /// The queue the message went to.
    pub message_queue: MessageQueue,
    /// Consume-queue offset of the (first) message.
    pub queue_offset: i64,
    /// Transaction id.
    pub transaction_id: Option<String>,
    /// Broker region (`DefaultRegion` when not sent).
    pub region_id: String,
    /// Whether tracing is on.
    pub trace_on: bool,
    /// A timer message's recall handle (5.3 brokers; see
    /// [`crate::message::RecallHandle`]).
    pub recall_handle: Option<String>,
}

/// What a pull returns. Java: `PullResult`.
#[derive(Clone, Debug)]
pub struct PullResult {
    /// Outcome.
    pub status: PullStatus,
    /// Offset to pull from next.
    pub next_begin_offset: i64,
    /// Queue min offset.
    pub min_offset: i64,
    /// Queue max offset.
    pub max_offset: i64,
    /// Broker id to pull from next.
    pub suggest_which_broker_id: i64,
    /// Messages (bodies decompressed; MIN_OFFSET/MAX_OFFSET set; transaction ids filled).
    pub messages: Vec<MessageExt>,
}

/// What a pop returns. Java: `PopResult`.
#[derive(Clone, Debug)]
pub struct PopResult {
    /// Outcome.
    pub status: PopStatus,
    /// When the broker popped them.
    pub popped_at: SystemTime,
    /// How long they stay invisible from then unless acknowledged.
    pub invisible: Duration,
    /// Messages left in the popped queues after these.
    pub rest: i64,
    /// The messages, each with the checkpoint that acknowledges it.
    pub messages: Vec<PoppedMessage>,
}

/// A popped message and its checkpoint (Java: the `POP_CK` property), which
/// [`ClientApi::ack_message`] and [`ClientApi::change_invisible_time`] name it by.
#[derive(Clone, Debug)]
pub struct PoppedMessage {
    /// The message (body decompressed; its reconsume times count earlier deliveries).
    pub message: MessageExt,
    /// Its checkpoint.
    pub checkpoint: PopExtraInfo,
}

/// What a broker registration returns.
#[derive(Clone, Debug, Default)]
pub struct RegisterBrokerResult {
    /// Master HA address (for slaves).
    pub ha_server_addr: Option<String>,
    /// Master address (for slaves).
    pub master_addr: Option<String>,
    /// Order-topic KV config.
    pub kv_table: KvTable,
}

/// Typed RPCs over a [`RemotingClient`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientApi {
    remoting: RemotingClient,
    config: ApiConfig,
}

impl ClientApi {
    /// An API over `remoting`.
    pub fn new(remoting: RemotingClient, config: ApiConfig) -> Self {
        Self { remoting, config }
    }

    /// The remoting client underneath.
    pub fn remoting(&self) -> &RemotingClient {
        &self.remoting
    }

    /// The settings.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// A request with `code` and `header`, in the configured serialisation (see
    /// [`ClientApi::header_type`]).
    pub fn request(&self, code: RequestCode, header: &impl CommandHeader) -> RemotingCommand {
        self.bare_request(code)
            .with_ext_fields(header.to_ext_fields())
    }

    fn bare_request(&self, code: RequestCode) -> RemotingCommand {
        RemotingCommand::request(code.0).with_serialize_type(self.header_type(code))
    }

    /// The header serialisation of a request with `code`: the configured one, except that a
    /// code a ROCKETMQ header cannot hold (it has 16 bits for it: the 5.x pop codes, 200050
    /// and up) goes with a JSON header, which brokers read whatever their clients' type. (Java
    /// cuts such a code to 16 bits, which a 5.3 broker does not know.)
    pub fn header_type(&self, code: RequestCode) -> SerializeType {
        match self.config.serialize_type {
            SerializeType::RocketMq if i16::try_from(code.0).is_err() => SerializeType::Json,
            ty => ty,
        }
    }

    async fn call(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, ClientApiError> {
        Ok(self.remoting.invoke(addr, request, timeout).await?)
    }

    async fn call_ok(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, ClientApiError> {
        let response = self.call(addr, request, timeout).await?;
        expect_success(addr, response)
    }

    /// A call whose SUCCESS response carries its answer in a response header.
    async fn call_for<R: CommandHeader>(
        &self,
        addr: &str,
        code: RequestCode,
        header: &impl CommandHeader,
        timeout: Duration,
    ) -> Result<R, ClientApiError> {
        let response = self
            .call_ok(addr, self.request(code, header), timeout)
            .await?;
        decode_header(addr, &response)
    }

    // ----- name server -----

    /// The route of `topic` from the configured name servers.
    ///
    /// # Errors
    /// [`ClientApiError::Broker`] with TOPIC_NOT_EXIST when the name server knows no route;
    /// [`mq_remoting::RemotingError::NoNameServer`] inside [`ClientApiError::Remoting`] when none
    /// is configured; transport and body errors.
    pub async fn topic_route(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<TopicRouteData, ClientApiError> {
        let request = self.request(RequestCode::GET_ROUTEINFO_BY_TOPIC, &route_header(topic));
        let response = self.remoting.invoke_name_server(request, timeout).await?;
        let addr = self.remoting.name_servers().chosen().unwrap_or_default();
        parse_route(&addr, expect_success(&addr, response)?)
    }

    /// The route of `topic` from the name server at `addr`.
    ///
    /// # Errors
    /// As for [`ClientApi::topic_route`].
    pub async fn topic_route_from(
        &self,
        addr: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<TopicRouteData, ClientApiError> {
        let request = self.request(RequestCode::GET_ROUTEINFO_BY_TOPIC, &route_header(topic));
        let response = self.call_ok(addr, request, timeout).await?;
        parse_route(addr, response)
    }

    /// Cluster membership from the configured name servers.
    ///
    /// # Errors
    /// Transport, broker and body errors.
    pub async fn cluster_info(&self, timeout: Duration) -> Result<ClusterInfo, ClientApiError> {
        let request = self.bare_request(RequestCode::GET_BROKER_CLUSTER_INFO);
        let response = self.remoting.invoke_name_server(request, timeout).await?;
        let addr = self.remoting.name_servers().chosen().unwrap_or_default();
        let response = expect_success(&addr, response)?;
        parse_body(&addr, "ClusterInfo", &response.body)
    }

    /// Every topic the configured name servers know.
    ///
    /// # Errors
    /// Transport, broker and body errors.
    pub async fn topic_list(&self, timeout: Duration) -> Result<Vec<String>, ClientApiError> {
        let request = self.bare_request(RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER);
        let response = self.remoting.invoke_name_server(request, timeout).await?;
        let addr = self.remoting.name_servers().chosen().unwrap_or_default();
        let response = expect_success(&addr, response)?;
        let list: TopicList = parse_body(&addr, "TopicList", &response.body)?;
        Ok(list.topic_list)
    }

    /// Registers a broker with the name server at `addr`. The body is sent compressed when
    /// `header.compressed` is set; `bodyCrc32` is filled in.
    ///
    /// # Errors
    /// Transport and broker errors (e.g. SYSTEM_ERROR `crc32 not match`).
    pub async fn register_broker(
        &self,
        addr: &str,
        mut header: RegisterBrokerRequestHeader,
        body: &RegisterBrokerBody,
        timeout: Duration,
    ) -> Result<RegisterBrokerResult, ClientApiError> {
        let bytes = if header.compressed {
            body.encode_compressed()
        } else {
            body.encode_json()
        };
        header.body_crc32 = body::body_crc32(&bytes);
        let request = self
            .request(RequestCode::REGISTER_BROKER, &header)
            .with_body(bytes);
        let response = self.call_ok(addr, request, timeout).await?;
        let h: RegisterBrokerResponseHeader = decode_header(addr, &response)?;
        let kv_table = if response.body.is_empty() {
            KvTable::default()
        } else {
            parse_body(addr, "KVTable", &response.body)?
        };
        Ok(RegisterBrokerResult {
            ha_server_addr: h.ha_server_addr,
            master_addr: h.master_addr,
            kv_table,
        })
    }

    /// Unregisters a broker from the name server at `addr`.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn unregister_broker(
        &self,
        addr: &str,
        header: &UnregisterBrokerRequestHeader,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let request = self.request(RequestCode::UNREGISTER_BROKER, header);
        self.call_ok(addr, request, timeout).await.map(drop)
    }

    // ----- send -----

    /// The request code a send goes with.
    fn send_code(&self, header: &SendMessageRequestHeader, reply: bool) -> RequestCode {
        match (header.batch, reply, self.config.send_v2) {
            (true, _, _) => RequestCode::SEND_BATCH_MESSAGE,
            (false, true, true) => RequestCode::SEND_REPLY_MESSAGE_V2,
            (false, true, false) => RequestCode::SEND_REPLY_MESSAGE,
            (false, false, true) => RequestCode::SEND_MESSAGE_V2,
            (false, false, false) => RequestCode::SEND_MESSAGE,
        }
    }

    fn send_command_with(&self, code: RequestCode, ext: ExtFields, body: Bytes) -> RemotingCommand {
        RemotingCommand::request(code.0)
            .with_serialize_type(self.header_type(code))
            .with_ext_fields(ext)
            .with_body(body)
    }

    /// The send request of `req`, consumed: its V2 fields are written straight into the
    /// frame. Also returns what the result needs of it.
    fn send_command_owned(&self, req: SendRequest) -> (RemotingCommand, SentAs) {
        let code = self.send_code(&req.header, req.reply);
        let SendRequest {
            header,
            body,
            msg_id,
            broker_name,
            reply: _,
        } = req;
        if v1_fields(code) {
            let mut ext = ExtFields::with_capacity(16, 256);
            header.encode(&mut ext);
            let sent = SentAs {
                msg_id,
                topic: header.topic,
                broker_name,
            };
            return (self.send_command_with(code, ext, body), sent);
        }
        let sent = SentAs {
            msg_id,
            topic: Arc::clone(&header.topic),
            broker_name,
        };
        let command =
            self.send_command_with(code, ExtFields::typed(Arc::new(SendV2Fields(header))), body);
        (command, sent)
    }

    /// Sends a message (or batch) and waits for the broker's answer.
    ///
    /// # Errors
    /// [`ClientApiError::Broker`] for codes other than the four "stored" ones; transport and
    /// header errors.
    ///
    /// The request is consumed: its ids and names move into the result. The command is built
    /// when this is called; nothing is sent until the future is polled.
    pub fn send<'a>(
        &'a self,
        addr: &'a str,
        req: SendRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<SendResult, ClientApiError>> + Send + 'a {
        self.send_in(addr, req, timeout, RequestGroup::NONE)
    }

    /// [`ClientApi::send`] as a request of `group`, which its owner can end at once with
    /// [`mq_remoting::RemotingClient::abort_group`] (a producer dropped or past its shutdown
    /// grace).
    ///
    /// # Errors
    /// As for [`ClientApi::send`], and [`mq_remoting::RemotingError::Aborted`] inside
    /// [`ClientApiError::Remoting`].
    pub fn send_in<'a>(
        &'a self,
        addr: &'a str,
        req: SendRequest,
        timeout: Duration,
        group: RequestGroup,
    ) -> impl Future<Output = Result<SendResult, ClientApiError>> + Send + 'a {
        // Built before the future, which then holds only the command and what the result
        // needs: an async fn would keep the whole request beside them for the send's lifetime.
        // The answer is read by a combinator around the invoke, which keeps it in one place
        // (an async block awaiting it would hold it twice: as captured and as awaited).
        let (command, sent) = self.send_command_owned(req);
        let invoke = self.remoting.invoke_in(addr, command, timeout, group);
        invoke.map(move |response| send_result(addr, sent, &response?))
    }

    /// [`ClientApi::send_in`] within a deadline rather than a timeout (see
    /// [`mq_remoting::RemotingClient::invoke_until`]).
    ///
    /// # Errors
    /// As for [`ClientApi::send_in`].
    pub fn send_until<'a>(
        &'a self,
        addr: &'a str,
        req: SendRequest,
        deadline: tokio::time::Instant,
        group: RequestGroup,
    ) -> impl Future<Output = Result<SendResult, ClientApiError>> + Send + 'a {
        let (command, sent) = self.send_command_owned(req);
        let invoke = self.remoting.invoke_until(addr, command, deadline, group);
        invoke.map(move |response| send_result(addr, sent, &response?))
    }

    /// Sends a message and hands the result to `callback` on the callback executor.
    ///
    /// # Errors
    /// Failures before the request is written are returned and the callback is not called.
    pub async fn send_with_callback<F>(
        &self,
        addr: &str,
        req: SendRequest,
        timeout: Duration,
        callback: F,
    ) -> Result<(), ClientApiError>
    where
        F: FnOnce(Result<SendResult, ClientApiError>) + Send + 'static,
    {
        let (command, sent) = self.send_command_owned(req);
        let owned_addr = addr.to_owned();
        self.remoting
            .invoke_with_callback(addr, command, timeout, move |r| {
                let result = match r {
                    Ok(response) => send_result(&owned_addr, sent, &response),
                    Err(e) => Err(e.into()),
                };
                callback(result);
            })
            .await?;
        Ok(())
    }

    /// Sends a message without waiting for any answer.
    ///
    /// # Errors
    /// Failures before the request is written.
    pub fn send_oneway<'a>(
        &'a self,
        addr: &'a str,
        req: SendRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ClientApiError>> + Send + 'a {
        // The command is built first; the future holds only the invoke (see `send`).
        let (command, _) = self.send_command_owned(req);
        self.remoting
            .invoke_oneway(addr, command, timeout)
            .map(|sent| Ok(sent?))
    }

    // ----- client management -----

    /// Sends a heartbeat; returns the broker's version (recorded by Java clients).
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn heartbeat(
        &self,
        addr: &str,
        data: &HeartbeatData,
        timeout: Duration,
    ) -> Result<i32, ClientApiError> {
        let request = self
            .bare_request(RequestCode::HEART_BEAT)
            .with_language(self.config.language)
            .with_body(body::to_json(data));
        let response = self.call_ok(addr, request, timeout).await?;
        Ok(response.version)
    }

    /// Tells a broker a producer or consumer group of this client is leaving.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn unregister_client(
        &self,
        addr: &str,
        header: &UnregisterClientRequestHeader,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let request = self.request(RequestCode::UNREGISTER_CLIENT, header);
        self.call_ok(addr, request, timeout).await.map(drop)
    }

    /// Client ids of a consumer group.
    ///
    /// # Errors
    /// Transport, broker and body errors.
    pub async fn consumer_list_by_group(
        &self,
        addr: &str,
        group: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ClientApiError> {
        let header = GetConsumerListByGroupRequestHeader {
            consumer_group: group.to_owned(),
        };
        let request = self.request(RequestCode::GET_CONSUMER_LIST_BY_GROUP, &header);
        let response = self.call_ok(addr, request, timeout).await?;
        let body: ConsumerListByGroupBody =
            parse_body(addr, "GetConsumerListByGroupResponseBody", &response.body)?;
        Ok(body.consumer_id_list)
    }

    /// Locks queues for orderly consumption; returns the queues now held.
    ///
    /// # Errors
    /// Transport, broker and body errors.
    pub async fn lock_batch_mq(
        &self,
        addr: &str,
        body: &LockBatchRequestBody,
        timeout: Duration,
    ) -> Result<Vec<MessageQueue>, ClientApiError> {
        let request = self
            .bare_request(RequestCode::LOCK_BATCH_MQ)
            .with_body(body::to_json(body));
        let response = self.call_ok(addr, request, timeout).await?;
        let locked: LockBatchResponseBody =
            parse_body(addr, "LockBatchResponseBody", &response.body)?;
        Ok(locked.lock_ok_mq_set)
    }

    /// Unlocks queues.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn unlock_batch_mq(
        &self,
        addr: &str,
        body: &LockBatchRequestBody,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let request = self
            .bare_request(RequestCode::UNLOCK_BATCH_MQ)
            .with_body(body::to_json(body));
        self.call_ok(addr, request, timeout).await.map(drop)
    }

    // ----- pull and offsets -----

    /// Pulls messages. `timeout` must exceed the header's suspend timeout when long polling.
    ///
    /// # Errors
    /// [`ClientApiError::Broker`] for codes outside the pull statuses; transport errors.
    pub async fn pull(
        &self,
        addr: &str,
        header: &PullMessageRequestHeader,
        timeout: Duration,
    ) -> Result<PullResult, ClientApiError> {
        let request = self.request(RequestCode::PULL_MESSAGE, header);
        let response = self.call(addr, request, timeout).await?;
        let code = ResponseCode(response.code);
        let Some(status) = PullStatus::from_response(code) else {
            return Err(broker_error(addr, response));
        };
        let h: PullMessageResponseHeader = decode_header(addr, &response)?;
        let mut messages = if status == PullStatus::Found {
            let offsets = [
                (property::MIN_OFFSET, h.min_offset),
                (property::MAX_OFFSET, h.max_offset),
            ];
            crate::message::decode_records_with(&response.body, false, true, &offsets)
        } else {
            Vec::new()
        };
        for m in &mut messages {
            let msg = &mut m.message;
            if msg.is_transaction_prepared() {
                msg.transaction_id = msg.uniq_key().map(str::to_owned);
            }
        }
        Ok(PullResult {
            status,
            next_begin_offset: h.next_begin_offset,
            min_offset: h.min_offset,
            max_offset: h.max_offset,
            suggest_which_broker_id: h.suggest_which_broker_id,
            messages,
        })
    }

    /// Pops messages of a group from `broker_name` at `addr`: they stay invisible to the
    /// group's other pops until acknowledged or until the invisible time passes. `timeout` must
    /// exceed the header's poll time.
    ///
    /// # Errors
    /// [`ClientApiError::Broker`] for codes outside the pop statuses; transport errors.
    pub async fn pop_message(
        &self,
        broker_name: &str,
        addr: &str,
        header: &PopMessageRequestHeader,
        timeout: Duration,
    ) -> Result<PopResult, ClientApiError> {
        let request = self.request(RequestCode::POP_MESSAGE, header);
        let response = self.call(addr, request, timeout).await?;
        let Some(status) = PopStatus::from_response(ResponseCode(response.code)) else {
            return Err(broker_error(addr, response));
        };
        let h: PopMessageResponseHeader = decode_header(addr, &response)?;
        let messages = if status == PopStatus::Found {
            popped_messages(broker_name, &h, decode_records(&response.body, false, true))
        } else {
            Vec::new()
        };
        Ok(PopResult {
            status,
            popped_at: crate::wire_time::from_millis(h.pop_time),
            invisible: crate::wire_time::millis_duration(h.invisible_time),
            rest: h.rest_num,
            messages,
        })
    }

    /// Acknowledges a popped message.
    ///
    /// # Errors
    /// [`ClientApiError::Broker`] (NO_MESSAGE for an offset the queue no longer holds);
    /// transport errors.
    pub async fn ack_message(
        &self,
        addr: &str,
        header: &AckMessageRequestHeader,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let request = self.request(RequestCode::ACK_MESSAGE, header);
        self.call_ok(addr, request, timeout).await.map(drop)
    }

    /// Keeps a popped message invisible for the header's time from now; the answer holds its
    /// new checkpoint's times.
    ///
    /// # Errors
    /// [`ClientApiError::Broker`] (NO_MESSAGE when the checkpoint no longer holds the
    /// message); transport errors.
    pub async fn change_invisible_time(
        &self,
        addr: &str,
        header: &ChangeInvisibleTimeRequestHeader,
        timeout: Duration,
    ) -> Result<ChangeInvisibleTimeResponseHeader, ClientApiError> {
        self.call_for(
            addr,
            RequestCode::CHANGE_MESSAGE_INVISIBLETIME,
            header,
            timeout,
        )
        .await
    }

    /// A consumer group's committed offset.
    ///
    /// # Errors
    /// [`ClientApiError::Broker`] with QUERY_NOT_FOUND when none is committed.
    pub async fn query_consumer_offset(
        &self,
        addr: &str,
        header: &QueryConsumerOffsetRequestHeader,
        timeout: Duration,
    ) -> Result<i64, ClientApiError> {
        let h: QueryConsumerOffsetResponseHeader = self
            .call_for(addr, RequestCode::QUERY_CONSUMER_OFFSET, header, timeout)
            .await?;
        Ok(h.offset)
    }

    /// Commits a consumer group's offset and waits for the answer.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn update_consumer_offset(
        &self,
        addr: &str,
        header: &UpdateConsumerOffsetRequestHeader,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let request = self.request(RequestCode::UPDATE_CONSUMER_OFFSET, header);
        self.call_ok(addr, request, timeout).await.map(drop)
    }

    /// Commits an offset oneway (the periodic persist).
    ///
    /// # Errors
    /// Failures before the request is written.
    pub async fn update_consumer_offset_oneway(
        &self,
        addr: &str,
        header: &UpdateConsumerOffsetRequestHeader,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let request = self.request(RequestCode::UPDATE_CONSUMER_OFFSET, header);
        Ok(self.remoting.invoke_oneway(addr, request, timeout).await?)
    }

    /// A queue's max offset.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn max_offset(
        &self,
        addr: &str,
        mq: &MessageQueue,
        timeout: Duration,
    ) -> Result<i64, ClientApiError> {
        let header = GetMaxOffsetRequestHeader {
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
        };
        let h: GetMaxOffsetResponseHeader = self
            .call_for(addr, RequestCode::GET_MAX_OFFSET, &header, timeout)
            .await?;
        Ok(h.offset)
    }

    /// A queue's min offset.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn min_offset(
        &self,
        addr: &str,
        mq: &MessageQueue,
        timeout: Duration,
    ) -> Result<i64, ClientApiError> {
        let header = GetMinOffsetRequestHeader {
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
        };
        let h: GetMinOffsetResponseHeader = self
            .call_for(addr, RequestCode::GET_MIN_OFFSET, &header, timeout)
            .await?;
        Ok(h.offset)
    }

    /// The offset of the first message stored at or after `time` (the wire carries
    /// milliseconds).
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn search_offset(
        &self,
        addr: &str,
        mq: &MessageQueue,
        time: SystemTime,
        timeout: Duration,
    ) -> Result<i64, ClientApiError> {
        let header = SearchOffsetRequestHeader {
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
            timestamp: crate::wire_time::to_millis(time),
        };
        let h: SearchOffsetResponseHeader = self
            .call_for(
                addr,
                RequestCode::SEARCH_OFFSET_BY_TIMESTAMP,
                &header,
                timeout,
            )
            .await?;
        Ok(h.offset)
    }

    /// Store time of a queue's earliest message.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn earliest_msg_store_time(
        &self,
        addr: &str,
        mq: &MessageQueue,
        timeout: Duration,
    ) -> Result<SystemTime, ClientApiError> {
        let header = GetEarliestMsgStoretimeRequestHeader {
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
        };
        let h: GetEarliestMsgStoretimeResponseHeader = self
            .call_for(
                addr,
                RequestCode::GET_EARLIEST_MSG_STORETIME,
                &header,
                timeout,
            )
            .await?;
        Ok(crate::wire_time::from_millis(h.timestamp))
    }

    // ----- messages -----

    /// Returns a consumed message to the broker for redelivery (retry topic or DLQ).
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn consumer_send_back(
        &self,
        addr: &str,
        header: &ConsumerSendMsgBackRequestHeader,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let request = self.request(RequestCode::CONSUMER_SEND_MSG_BACK, header);
        self.call_ok(addr, request, timeout).await.map(drop)
    }

    /// Commits, rolls back or leaves undecided a half message (oneway, as Java sends it).
    ///
    /// # Errors
    /// Failures before the request is written.
    pub async fn end_transaction_oneway(
        &self,
        addr: &str,
        header: &EndTransactionRequestHeader,
        remark: Option<String>,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let mut request = self.request(RequestCode::END_TRANSACTION, header);
        request.remark = remark;
        Ok(self.remoting.invoke_oneway(addr, request, timeout).await?)
    }

    /// Recalls a timer message before it is delivered (RECALL_MESSAGE, 5.3 brokers); returns
    /// the recalled message's unique id.
    ///
    /// # Errors
    /// Transport and broker errors (ILLEGAL_OPERATION for a handle that is invalid, of another
    /// topic or broker, or whose time has passed).
    pub async fn recall_message(
        &self,
        addr: &str,
        header: &RecallMessageRequestHeader,
        timeout: Duration,
    ) -> Result<String, ClientApiError> {
        let h: RecallMessageResponseHeader = self
            .call_for(addr, RequestCode::RECALL_MESSAGE, header, timeout)
            .await?;
        Ok(h.msg_id)
    }

    /// One stored message by commit-log offset.
    ///
    /// # Errors
    /// Transport, broker and record errors.
    pub async fn view_message(
        &self,
        addr: &str,
        commit_log_offset: i64,
        timeout: Duration,
    ) -> Result<MessageExt, ClientApiError> {
        let header = ViewMessageRequestHeader {
            offset: commit_log_offset,
        };
        let request = self.request(RequestCode::VIEW_MESSAGE_BY_ID, &header);
        let response = self.call_ok(addr, request, timeout).await?;
        let mut body = response.body.clone();
        decode_record(&mut body, true, true).map_err(|source| ClientApiError::Record {
            addr: addr.to_owned(),
            source,
        })
    }

    /// Messages by key (or by unique id).
    ///
    /// # Errors
    /// [`ClientApiError::Broker`] with QUERY_NOT_FOUND when none match.
    pub async fn query_message(
        &self,
        addr: &str,
        header: &QueryMessageRequestHeader,
        timeout: Duration,
    ) -> Result<Vec<MessageExt>, ClientApiError> {
        let request = self.request(RequestCode::QUERY_MESSAGE, header);
        let response = self.call_ok(addr, request, timeout).await?;
        Ok(decode_records(&response.body, true, true))
    }

    /// Creates or updates a topic on a broker.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn create_topic(
        &self,
        addr: &str,
        header: &CreateTopicRequestHeader,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let request = self.request(RequestCode::UPDATE_AND_CREATE_TOPIC, header);
        self.call_ok(addr, request, timeout).await.map(drop)
    }

    /// Creates or updates a subscription group on a broker.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn update_subscription_group(
        &self,
        addr: &str,
        config: &body::SubscriptionGroupConfig,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let request = self
            .bare_request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(body::to_json(config));
        self.call_ok(addr, request, timeout).await.map(drop)
    }

    /// A subscription group's config on a broker (5.x; a 4.x broker answers
    /// REQUEST_CODE_NOT_SUPPORTED).
    ///
    /// # Errors
    /// [`ClientApiError::Broker`] with SUBSCRIPTION_GROUP_NOT_EXIST when the broker has no such
    /// group; transport and body errors.
    pub async fn subscription_group(
        &self,
        addr: &str,
        group: &str,
        timeout: Duration,
    ) -> Result<body::SubscriptionGroupConfig, ClientApiError> {
        let header = GetSubscriptionGroupConfigRequestHeader {
            group: group.to_owned(),
        };
        let request = self.request(RequestCode::GET_SUBSCRIPTIONGROUP_CONFIG, &header);
        let response = self.call_ok(addr, request, timeout).await?;
        parse_body(addr, "SubscriptionGroupConfig", &response.body)
    }

    /// A subscription group's config on a broker of any version: asked for it alone (5.x), or
    /// for all (a 4.x broker, which answers the first with REQUEST_CODE_NOT_SUPPORTED). `None`
    /// when the broker has no config for the group.
    ///
    /// # Errors
    /// Transport, broker and body errors.
    pub async fn find_subscription_group(
        &self,
        addr: &str,
        group: &str,
        timeout: Duration,
    ) -> Result<Option<body::SubscriptionGroupConfig>, ClientApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.subscription_group(addr, group, timeout).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.response_code() == Some(ResponseCode::SUBSCRIPTION_GROUP_NOT_EXIST) => {
                Ok(None)
            }
            Err(e) if e.response_code() == Some(ResponseCode::REQUEST_CODE_NOT_SUPPORTED) => {
                Ok(self
                    .all_subscription_groups(addr, left())
                    .await?
                    .subscription_group_table
                    .remove(group))
            }
            Err(e) => Err(e),
        }
    }

    /// Every subscription group's config on a broker.
    ///
    /// # Errors
    /// Transport, broker and body errors.
    pub async fn all_subscription_groups(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<body::SubscriptionGroupWrapper, ClientApiError> {
        let request = self.bare_request(RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG);
        let response = self.call_ok(addr, request, timeout).await?;
        parse_body(addr, "SubscriptionGroupWrapper", &response.body)
    }

    /// Deletes a subscription group from a broker, with its committed offsets when
    /// `clean_offset`.
    ///
    /// # Errors
    /// Transport and broker errors.
    pub async fn delete_subscription_group(
        &self,
        addr: &str,
        group: &str,
        clean_offset: bool,
        timeout: Duration,
    ) -> Result<(), ClientApiError> {
        let header = DeleteSubscriptionGroupRequestHeader {
            group_name: group.to_owned(),
            clean_offset,
        };
        let request = self.request(RequestCode::DELETE_SUBSCRIPTIONGROUP, &header);
        self.call_ok(addr, request, timeout).await.map(drop)
    }
}

fn route_header(topic: &str) -> GetRouteInfoRequestHeader {
    GetRouteInfoRequestHeader {
        topic: topic.to_owned(),
        accept_standard_json_only: None,
    }
}

fn parse_route(addr: &str, response: RemotingCommand) -> Result<TopicRouteData, ClientApiError> {
    parse_body(addr, "TopicRouteData", &response.body)
}

/// Turns a non-SUCCESS response into [`ClientApiError::Broker`].
/// Each popped message with its checkpoint, built as Java's client does from the answer's
/// per-queue start offsets (`mark queueId offset;…`).
fn popped_messages(
    broker_name: &str,
    h: &PopMessageResponseHeader,
    messages: Vec<MessageExt>,
) -> Vec<PoppedMessage> {
    let starts: Vec<(&str, i32, i64)> = h
        .start_offset_info
        .as_deref()
        .unwrap_or("")
        .split(';')
        .filter_map(|one| {
            let mut f = one.split(' ');
            let mark = f.next()?;
            let q = f.next()?.parse().ok()?;
            let start = f.next()?.parse().ok()?;
            Some((mark, q, start))
        })
        .collect();
    messages
        .into_iter()
        .map(|message| {
            let mark = crate::header::pop_topic_mark(&message.message.topic);
            let start = starts
                .iter()
                .find(|(m, q, _)| *m == mark && *q == message.queue_id)
                .map_or(message.queue_offset, |s| s.2);
            let checkpoint = PopExtraInfo {
                checkpoint_offset: start,
                pop_time: h.pop_time,
                invisible_time: h.invisible_time,
                revive_qid: h.revive_qid,
                topic_mark: mark.to_owned(),
                broker_name: broker_name.to_owned(),
                queue_id: message.queue_id,
                queue_offset: Some(message.queue_offset),
                commit_log_offset: None,
            };
            PoppedMessage {
                message,
                checkpoint,
            }
        })
        .collect()
}

fn expect_success(
    addr: &str,
    response: RemotingCommand,
) -> Result<RemotingCommand, ClientApiError> {
    if response.code == ResponseCode::SUCCESS.0 {
        Ok(response)
    } else {
        Err(broker_error(addr, response))
    }
}

fn broker_error(addr: &str, response: RemotingCommand) -> ClientApiError {
    ClientApiError::Broker {
        code: ResponseCode(response.code),
        remark: response.remark,
        addr: addr.to_owned(),
    }
}

fn decode_header<H: CommandHeader>(
    addr: &str,
    response: &RemotingCommand,
) -> Result<H, ClientApiError> {
    H::decode(&response.ext_fields).map_err(|source| header_error(addr, source))
}

fn header_error(addr: &str, source: crate::header::HeaderError) -> ClientApiError {
    ClientApiError::Header {
        addr: addr.to_owned(),
        source,
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(
    addr: &str,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ClientApiError> {
    body::from_json(what, bytes).map_err(|source| ClientApiError::Body {
        addr: addr.to_owned(),
        source,
    })
}

/// What a send's result takes from its request.
struct SentAs {
    msg_id: String,
    /// Shared with the request's header.
    topic: Arc<str>,
    broker_name: String,
}

/// Whether `code` sends the V1 field names.
fn v1_fields(code: RequestCode) -> bool {
    code == RequestCode::SEND_MESSAGE || code == RequestCode::SEND_REPLY_MESSAGE
}

fn send_result(
    addr: &str,
    req: SentAs,
    response: &RemotingCommand,
) -> Result<SendResult, ClientApiError> {
    let Some(status) = SendStatus::from_response(ResponseCode(response.code)) else {
        return Err(broker_error(addr, response.clone()));
    };
    let h = SendResponseRef::decode(&response.ext_fields)
        .map_err(|source| header_error(addr, source))?;
    Ok(SendResult {
        status,
        msg_id: req.msg_id,
        offset_msg_id: h.msg_id.to_owned(),
        message_queue: MessageQueue::new(&*req.topic, req.broker_name, h.queue_id),
        queue_offset: h.queue_offset,
        transaction_id: h.transaction_id.map(str::to_owned),
        region_id: h
            .msg_region
            .filter(|r| !r.is_empty())
            .unwrap_or("DefaultRegion")
            .to_owned(),
        trace_on: h.trace_on != Some("false"),
        recall_handle: h.recall_handle.filter(|r| !r.is_empty()).map(str::to_owned),
    })
}
