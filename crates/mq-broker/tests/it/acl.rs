//! ACL over loopback: signed requests pass; a wrong secret, an unknown key, a topic without PUB
//! or SUB and an admin code from a plain account are each refused with NO_PERMISSION naming
//! why; white-listed addresses pass without a signature.

use std::sync::Arc;

use mq_broker::Acl;
use mq_client_api::acl::{AclSigner, Credentials};
use mq_client_api::message::Message;
use mq_client_api::{ApiConfig, ClientApi, ClientApiError, ResponseCode, SendStatus};
use mq_remoting::{ClientConfig, RemotingClient};
use mq_test_support::send_request;

use crate::{T, broker, pull_header};

const ACL: &str = r#"
globalWhiteRemoteAddresses:
  - 10.10.103.*
accounts:
  - accessKey: RocketMQ
    secretKey: 12345678
    whiteRemoteAddress:
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - Orders=PUB|SUB
      - Audit=PUB
      - Prices=SUB
    groupPerms:
      - blocked_cg=DENY
  - accessKey: rocketmq2
    secretKey: "12345678"
    whiteRemoteAddress: 127.0.0.1
    admin: true
"#;

fn api(credentials: Option<Credentials>) -> ClientApi {
    let mut config = ClientConfig::default();
    if let Some(c) = credentials {
        config = config.with_request_hook(Arc::new(AclSigner(c)));
    }
    ClientApi::new(RemotingClient::new(config), ApiConfig::default())
}

fn refusal(e: &ClientApiError) -> String {
    match e {
        ClientApiError::Broker {
            code: ResponseCode::NO_PERMISSION,
            remark,
            ..
        } => remark.clone().unwrap_or_default(),
        other => panic!("expected NO_PERMISSION, got {other}"),
    }
}

#[tokio::test]
async fn requests_are_checked_in_javas_order() {
    let dir = tempfile::tempdir().unwrap();
    let acl = Acl::from_yaml(ACL).unwrap();
    let b = broker(dir.path(), |c| c.with_acl(acl)).await;
    let addr = b.local_addr().to_string();
    let send = |api: ClientApi, topic: &'static str| {
        let addr = addr.clone();
        async move {
            let req = send_request(topic, 0, &Message::new(topic, "x"));
            api.send(&addr, req, T).await
        }
    };
    let plain_account = || api(Some(Credentials::new("RocketMQ", "12345678")));

    // Signed, with PUB: stored.
    let r = send(plain_account(), "Orders").await.unwrap();
    assert_eq!(r.status, SendStatus::SendOk);
    // Unsigned, an unknown key, a wrong secret.
    let e = send(api(None), "Orders").await.unwrap_err();
    assert_eq!(refusal(&e), "No accessKey is configured");
    let e = send(
        api(Some(Credentials::new("Stranger1", "12345678"))),
        "Orders",
    )
    .await
    .unwrap_err();
    assert_eq!(refusal(&e), "No acl config for Stranger1");
    let e = send(
        api(Some(Credentials::new("RocketMQ", "wrong-secret"))),
        "Orders",
    )
    .await
    .unwrap_err();
    assert_eq!(refusal(&e), "Check signature failed for accessKey=RocketMQ");
    // A topic without PUB (SUB only), and one the default denies.
    let e = send(plain_account(), "Prices").await.unwrap_err();
    assert!(refusal(&e).contains("topic:Prices"), "{e}");
    let e = send(plain_account(), "Elsewhere").await.unwrap_err();
    assert!(refusal(&e).contains("topic:Elsewhere"), "{e}");
    // A topic without SUB cannot be pulled; one with it can, by a group with SUB.
    let e = plain_account()
        .pull(&addr, &pull_header("Audit", 0, 0), T)
        .await
        .unwrap_err();
    assert!(refusal(&e).contains("topic:Audit"), "{e}");
    plain_account()
        .pull(&addr, &pull_header("Orders", 0, 0), T)
        .await
        .unwrap();
    let mut blocked = pull_header("Orders", 0, 0);
    blocked.consumer_group = "blocked_cg".into();
    let e = plain_account().pull(&addr, &blocked, T).await.unwrap_err();
    assert!(refusal(&e).contains("group:blocked_cg"), "{e}");
    // Admin codes need an admin account.
    let create = mq_test_support::create_topic_header("NewTopic", 1);
    let e = plain_account()
        .create_topic(&addr, &create, T)
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&e),
        "Need admin permission for request code=17, but accessKey=RocketMQ is not"
    );
    // The admin account is white-listed for 127.0.0.1: its key is enough, even with a wrong
    // secret, and it may create topics.
    let admin = api(Some(Credentials::new("rocketmq2", "not-the-secret")));
    admin.create_topic(&addr, &create, T).await.unwrap();
    let _ = b.shutdown(T).await;
}

#[tokio::test]
async fn a_globally_white_listed_address_needs_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let acl = Acl::from_yaml(
        "globalWhiteRemoteAddresses:\n  - 127.0.0.*\naccounts:\n  - accessKey: RocketMQ\n    secretKey: 12345678\n",
    )
    .unwrap();
    let b = broker(dir.path(), |c| c.with_acl(acl)).await;
    let req = send_request("Open", 0, &Message::new("Open", "x"));
    let r = api(None)
        .send(&b.local_addr().to_string(), req, T)
        .await
        .unwrap();
    assert_eq!(r.status, SendStatus::SendOk);
    let _ = b.shutdown(T).await;
}

#[test]
fn bad_acl_files_are_typed_errors() {
    assert!(matches!(
        Acl::from_yaml("accounts: [1, 2"),
        Err(mq_broker::AclError::Parse(_))
    ));
    let short = "accounts:\n  - accessKey: abc\n    secretKey: 12345678\n";
    assert!(matches!(
        Acl::from_yaml(short),
        Err(mq_broker::AclError::BadAccount(_))
    ));
    let twice = "accounts:\n  - accessKey: RocketMQ\n    secretKey: 12345678\n  - accessKey: RocketMQ\n    secretKey: 87654321\n";
    assert!(matches!(
        Acl::from_yaml(twice),
        Err(mq_broker::AclError::BadAccount(_))
    ));
    let bad_white = "globalWhiteRemoteAddresses:\n  - 10.0.0\n";
    assert!(matches!(
        Acl::from_yaml(bad_white),
        Err(mq_broker::AclError::BadAddress(_))
    ));
    let bad_perm = "accounts:\n  - accessKey: RocketMQ\n    secretKey: 12345678\n    topicPerms:\n      - NoEquals\n";
    assert!(matches!(
        Acl::from_yaml(bad_perm),
        Err(mq_broker::AclError::BadAccount(_))
    ));
}
