//! The names RocketMQ derives from others: a group's retry and dead-letter topics, a cluster's
//! reply topic, and the tags of a TAG subscription expression (spec §6); and the default delay
//! levels that delay-level numbers name.

/// Prefix of a group's retry topic.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic.
pub const DLQ_PREFIX: &str = "%DLQ%";

/// The retry topic of `group`: where its consumers' failed messages wait for redelivery.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of `group`: where messages go after their last retry.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// The reply topic of `cluster` (request-reply, 4.6+): where repliers send their replies, which
/// its brokers push to the requester instead of (or besides) storing them.
pub fn reply_topic(cluster: &str) -> String {
    format!("{cluster}_REPLY_TOPIC")
}

/// The default delay levels, level 1 first (Java `messageDelayLevel`: `1s 5s 10s 30s 1m 2m
/// 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h`): what a broker delays a message of each level by,
/// and the levels a gRPC delivery time is served with.
pub fn default_delay_levels() -> Vec<std::time::Duration> {
    [
        1u64, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
    ]
    .into_iter()
    .map(std::time::Duration::from_secs)
    .collect()
}

/// Whether `topic` is a group's retry topic.
pub fn is_retry_topic(topic: &str) -> bool {
    topic.starts_with(RETRY_PREFIX)
}

/// The tags of a TAG expression (`TagA || TagB`, trimmed, blanks dropped), or `None` for one
/// that takes every message (`*`, or blank).
pub fn expression_tags(expression: &str) -> Option<impl Iterator<Item = &str>> {
    let expression = expression.trim();
    (!expression.is_empty() && expression != "*").then(|| {
        expression
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_and_tags() {
        assert_eq!(retry_topic("g"), "%RETRY%g");
        assert_eq!(dlq_topic("g"), "%DLQ%g");
        assert!(is_retry_topic("%RETRY%g") && !is_retry_topic("%DLQ%g"));
        assert_eq!(reply_topic("DefaultCluster"), "DefaultCluster_REPLY_TOPIC");
        assert!(expression_tags(" * ").is_none() && expression_tags("").is_none());
        let tags: Vec<&str> = expression_tags(" TagA || TagB ||").unwrap().collect();
        assert_eq!(tags, ["TagA", "TagB"]);
    }
}
