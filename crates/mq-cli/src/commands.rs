//! Commands against a running cluster: `send`, `consume`, `route`, `topic`, `cluster`.

use std::time::Duration;

use tokio::time::Instant;

use mq_client_api::Message;
use mq_client_instance::ClientConfig;
use mq_consumer::{ConsumeFrom, ConsumerConfig, PullConsumer};
use mq_producer::{Producer, ProducerConfig};

use crate::Target;
use crate::options::Security;

fn api(namesrv: &str, security: &Security) -> Result<mq_client_api::ClientApi, String> {
    let remoting = security.remoting()?;
    remoting
        .name_servers()
        .update(mq_remoting::NameServerList::parse(namesrv));
    Ok(mq_client_api::ClientApi::new(
        remoting,
        mq_client_api::ApiConfig::default(),
    ))
}

fn client(target: &Target, role: &str) -> Result<ClientConfig, String> {
    let mut config = target.security.apply(
        ClientConfig::new(&target.namesrv)
            .with_instance_name(format!("mq-cli-{role}-{}", std::process::id())),
    )?;
    config.request_timeout = target.timeout;
    Ok(config)
}

/// The time left until `deadline`.
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// `mq send`: sends `count` copies of `body` (numbered when count > 1) and prints each result.
/// What `mq send` sends besides topic and body.
pub(crate) struct Sends<'a> {
    pub(crate) tag: Option<&'a str>,
    pub(crate) key: Option<&'a str>,
    /// How many messages (numbered when more than one).
    pub(crate) count: usize,
    /// Timer messages, due this long from now.
    pub(crate) deliver_in: Option<Duration>,
}

pub(crate) async fn send(
    target: &Target,
    topic: &str,
    body: &str,
    what: &Sends<'_>,
) -> Result<(), String> {
    let producer = cli_producer(target)?;
    producer.start().await.map_err(|e| e.to_string())?;
    let mut result = Ok(());
    let count = what.count;
    for i in 0..count {
        let text = if count > 1 {
            format!("{body} {i}")
        } else {
            body.to_owned()
        };
        let mut m = Message::new(topic, text);
        if let Some(t) = what.tag {
            m = m.with_tags(t);
        }
        if let Some(k) = what.key {
            m = m.with_keys([k]);
        }
        if let Some(d) = what.deliver_in {
            m = m.with_deliver_time(std::time::SystemTime::now() + d);
        }
        match producer.send(m).await {
            Ok(r) => println!(
                "{} {} queue {} offset {} msgId {} offsetMsgId {}{}",
                r.status.name(),
                r.message_queue.broker_name,
                r.message_queue.queue_id,
                r.queue_offset,
                r.msg_id,
                r.offset_msg_id,
                r.recall_handle
                    .map(|h| format!(" recallHandle {h}"))
                    .unwrap_or_default()
            ),
            Err(e) => {
                result = Err(e.to_string());
                break;
            }
        }
    }
    producer.shutdown().await;
    result
}

/// The producer of `mq send` and `mq recall`.
fn cli_producer(target: &Target) -> Result<Producer, String> {
    Ok(Producer::new(
        ProducerConfig::new("mq_cli_producer", &target.namesrv)
            .with_client(client(target, "send")?)
            .with_send_timeout(target.timeout),
    ))
}

/// `mq recall`: recalls a timer message by its handle.
pub(crate) async fn recall(target: &Target, topic: &str, handle: &str) -> Result<(), String> {
    let producer = cli_producer(target)?;
    producer.start().await.map_err(|e| e.to_string())?;
    let recalled = producer.recall_message(topic, handle).await;
    producer.shutdown().await;
    let id = recalled.map_err(|e| e.to_string())?;
    println!("recalled {id}");
    Ok(())
}

/// `mq consume`: pulls and prints messages until `count` arrived or `wait` passes without any.
pub(crate) async fn consume(
    target: &Target,
    topic: &str,
    group: &str,
    expression: &str,
    count: usize,
    wait: Duration,
    from_first: bool,
) -> Result<(), String> {
    let config = ConsumerConfig::new(group, &target.namesrv)
        .with_client(client(target, "consume")?)
        .with_consume_from(if from_first {
            ConsumeFrom::FirstOffset
        } else {
            ConsumeFrom::LastOffset
        });
    // A name server that does not answer is an error, said at once; a topic it does not know
    // (yet) is waited for, as a consumer does.
    if let Err(e) = api(&target.namesrv, &target.security)?
        .topic_route(topic, target.timeout)
        .await
        && e.response_code().is_none()
    {
        return Err(match e {
            mq_client_api::ClientApiError::Remoting(mq_remoting::RemotingError::Timeout {
                addr,
                elapsed,
                ..
            }) => format!("name server {addr} did not answer within {elapsed:?}"),
            other => format!("cannot look up the route of topic {topic}: {other}"),
        });
    }
    let consumer = PullConsumer::new(config);
    consumer
        .subscribe(topic, expression)
        .map_err(|e| e.to_string())?;
    consumer.start().await.map_err(|e| e.to_string())?;
    let mut got = 0;
    while got < count {
        let batch = consumer.poll(wait).await.map_err(|e| e.to_string())?;
        if batch.is_empty() {
            break;
        }
        for m in batch.into_iter().take(count - got) {
            println!(
                "{} queue {} offset {} tags {} msgId {} body {}",
                m.message.topic,
                m.queue_id,
                m.queue_offset,
                m.message.tags().unwrap_or("-"),
                m.msg_id(),
                String::from_utf8_lossy(&m.message.body)
            );
            got += 1;
        }
    }
    consumer.shutdown().await;
    eprintln!("consumed {got} message(s)");
    Ok(())
}

/// `mq route`: prints a topic's route as JSON.
pub(crate) async fn route(target: &Target, topic: &str) -> Result<(), String> {
    let route = api(&target.namesrv, &target.security)?
        .topic_route(topic, target.timeout)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{}",
        String::from_utf8_lossy(&mq_client_api::body::to_json(&route))
    );
    Ok(())
}

/// `mq topic list`.
pub(crate) async fn topic_list(target: &Target) -> Result<(), String> {
    for t in api(&target.namesrv, &target.security)?
        .topic_list(target.timeout)
        .await
        .map_err(|e| e.to_string())?
    {
        println!("{t}");
    }
    Ok(())
}

/// Creates `topic` on every master broker of the cluster behind `namesrv`, all within
/// `timeout`; returns the brokers' names and addresses.
pub(crate) async fn create_topic_everywhere(
    namesrv: &str,
    security: &Security,
    topic: &str,
    queues: i32,
    attributes: Option<String>,
    timeout: Duration,
) -> Result<Vec<(String, String)>, String> {
    mq_client_api::validate::validate_topic(topic).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let api = api(namesrv, security)?;
    let masters = masters(&api, deadline).await?;
    let header = mq_client_api::header::CreateTopicRequestHeader {
        topic: topic.to_owned(),
        default_topic: "TBW102".into(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: mq_client_api::body::perm::READ_WRITE,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_sys_flag: Some(0),
        order: false,
        attributes,
    };
    for (_, addr) in &masters {
        api.create_topic(addr, &header, left(deadline))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(masters)
}

/// `mq topic create`: creates the topic on every master broker of the cluster, with 5.x
/// attributes (`+message.type=FIFO`) when given.
pub(crate) async fn topic_create(
    target: &Target,
    topic: &str,
    queues: i32,
    attributes: Option<String>,
) -> Result<(), String> {
    let said = attributes
        .as_deref()
        .map_or_else(String::new, |a| format!(" ({a})"));
    for (name, addr) in create_topic_everywhere(
        &target.namesrv,
        &target.security,
        topic,
        queues,
        attributes,
        target.timeout,
    )
    .await?
    {
        println!("created {topic} with {queues} queues{said} on {name} ({addr})");
    }
    Ok(())
}

/// The master brokers of the cluster (name, address), asked within `deadline`.
async fn masters(
    api: &mq_client_api::ClientApi,
    deadline: Instant,
) -> Result<Vec<(String, String)>, String> {
    let info = api
        .cluster_info(left(deadline))
        .await
        .map_err(|e| e.to_string())?;
    let masters: Vec<(String, String)> = info
        .broker_addr_table
        .values()
        .filter_map(|b| Some((b.broker_name.clone(), b.master_addr()?.to_owned())))
        .collect();
    if masters.is_empty() {
        return Err("the cluster has no broker".into());
    }
    Ok(masters)
}

/// `mq group create`: stores the group's config on every master broker.
pub(crate) async fn group_create(
    target: &Target,
    group: &str,
    fifo: bool,
    retry_max_times: i32,
) -> Result<(), String> {
    mq_client_api::validate::validate_group(group).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + target.timeout;
    let api = api(&target.namesrv, &target.security)?;
    let mut config = mq_client_api::body::SubscriptionGroupConfig::new(group).with_orderly(fifo);
    config.retry_max_times = retry_max_times;
    for (name, addr) in masters(&api, deadline).await? {
        api.update_subscription_group(&addr, &config, left(deadline))
            .await
            .map_err(|e| e.to_string())?;
        // Read back: a 4.x broker takes the config but keeps no consumeMessageOrderly.
        let kept = api
            .find_subscription_group(&addr, group, left(deadline))
            .await
            .map_err(|e| e.to_string())?;
        if kept.as_ref().map(|c| c.consume_message_orderly) != Some(fifo) {
            return Err(format!(
                "broker {name} ({addr}) did not keep consumeMessageOrderly={fifo} for group \
                 {group}: FIFO consumer groups need a RocketMQ 5 broker"
            ));
        }
        let kind = if fifo { "FIFO" } else { "concurrent" };
        println!("group {group} ({kind}, {retry_max_times} deliveries) on {name} ({addr})");
    }
    Ok(())
}

/// `mq group list`: every master broker's group configs.
pub(crate) async fn group_list(target: &Target) -> Result<(), String> {
    let deadline = Instant::now() + target.timeout;
    let api = api(&target.namesrv, &target.security)?;
    println!(
        "{:<20} {:<30} {:<5} {:>7}",
        "broker", "group", "fifo", "retries"
    );
    for (name, addr) in masters(&api, deadline).await? {
        let all = api
            .all_subscription_groups(&addr, left(deadline))
            .await
            .map_err(|e| e.to_string())?;
        for (group, c) in &all.subscription_group_table {
            println!(
                "{name:<20} {group:<30} {:<5} {:>7}",
                c.consume_message_orderly, c.retry_max_times
            );
        }
    }
    Ok(())
}

/// `mq group delete`: removes the group's config from every master broker.
pub(crate) async fn group_delete(
    target: &Target,
    group: &str,
    clean_offset: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + target.timeout;
    let api = api(&target.namesrv, &target.security)?;
    for (name, addr) in masters(&api, deadline).await? {
        api.delete_subscription_group(&addr, group, clean_offset, left(deadline))
            .await
            .map_err(|e| e.to_string())?;
        println!("deleted group {group} on {name} ({addr})");
    }
    Ok(())
}

/// `mq cluster`: brokers by cluster.
pub(crate) async fn cluster(target: &Target) -> Result<(), String> {
    let info = api(&target.namesrv, &target.security)?
        .cluster_info(target.timeout)
        .await
        .map_err(|e| e.to_string())?;
    println!("{:<20} {:<20} {:>4} address", "cluster", "broker", "id");
    for (cluster, names) in &info.cluster_addr_table {
        for name in names {
            if let Some(b) = info.broker_addr_table.get(name) {
                for (id, addr) in &b.broker_addrs {
                    println!("{cluster:<20} {name:<20} {id:>4} {addr}");
                }
            }
        }
    }
    Ok(())
}
