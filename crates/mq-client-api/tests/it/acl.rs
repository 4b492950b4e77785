//! ACL signatures on the wire: a client with credentials signs every request (name-server
//! and broker requests alike), and a server on loopback that checks signatures the way an ACL
//! broker does accepts it; a wrong secret or no credentials are refused.

use std::sync::Arc;
use std::time::Duration;

use mq_client_api::acl::{ACCESS_KEY, AclSigner, Credentials, SIGNATURE, signature};
use mq_client_api::answer::{respond, respond_with};
use mq_client_api::header::{CommandHeader, SendMessageRequestHeader, SendMessageResponseHeader};
use mq_client_api::{ApiConfig, ClientApi, RequestCode, ResponseCode, SendRequest, SendStatus};
use mq_remoting::{
    ClientConfig, RemotingClient, RemotingCommand, RemotingServer, SerializeType, ServerConfig,
    processor_fn,
};

const T: Duration = Duration::from_secs(10);
const ACCESS: &str = "RocketMQ";
const SECRET: &str = "12345678";

/// What an ACL broker checks: a known access key, then the signature over every other field's
/// value in key order and the body.
fn check(req: &RemotingCommand) -> Result<(), String> {
    let key = req.ext(ACCESS_KEY).ok_or("no AccessKey")?;
    if key != ACCESS {
        return Err(format!("no acl config for {key}"));
    }
    let mut content = Vec::new();
    for (k, v) in req.ext_fields.iter() {
        if k != SIGNATURE {
            content.extend_from_slice(v.as_bytes());
        }
    }
    content.extend_from_slice(&req.body);
    if req.ext(SIGNATURE) != Some(signature(&content, SECRET).as_str()) {
        return Err("signature check failed".into());
    }
    Ok(())
}

async fn acl_server() -> RemotingServer {
    let server = RemotingServer::bind(ServerConfig::default()).await.unwrap();
    server.set_default_processor(processor_fn(|_ctx, req| async move {
        if let Err(why) = check(&req) {
            return Some(respond(&req, ResponseCode::NO_PERMISSION, why));
        }
        Some(match RequestCode(req.code) {
            RequestCode::SEND_MESSAGE | RequestCode::SEND_MESSAGE_V2 => respond_with(
                &req,
                &SendMessageResponseHeader {
                    msg_id: "0A00000100002A9F0000000000000000".into(),
                    queue_id: 0,
                    queue_offset: 7,
                    ..Default::default()
                },
            ),
            // The name server's answer for a topic it does not know: the request got through.
            _ => respond(&req, ResponseCode::TOPIC_NOT_EXIST, "no route".to_owned()),
        })
    }));
    server
}

fn api(addr: &str, credentials: Option<Credentials>, ty: SerializeType) -> ClientApi {
    let mut config = ClientConfig::default();
    if let Some(c) = credentials {
        config = config.with_request_hook(Arc::new(AclSigner(c)));
    }
    let remoting = RemotingClient::new(config);
    remoting.name_servers().update(vec![addr.to_owned()]);
    ClientApi::new(remoting, ApiConfig::default().with_serialize_type(ty))
}

fn send_request() -> SendRequest {
    SendRequest {
        header: SendMessageRequestHeader {
            producer_group: "pg".into(),
            topic: "TopicTest".into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            born_timestamp: 1,
            properties: Some("TAGS\u{1}TagA\u{2}".into()),
            ..Default::default()
        },
        body: bytes::Bytes::from_static(b"Hello RocketMQ"),
        msg_id: "U1".into(),
        broker_name: "broker-a".into(),
        reply: false,
    }
}

#[tokio::test]
async fn signed_requests_pass_and_others_are_refused() {
    let server = acl_server().await;
    let addr = server.local_addr().to_string();
    for ty in [SerializeType::Json, SerializeType::RocketMq] {
        let signed = api(&addr, Some(Credentials::new(ACCESS, SECRET)), ty);
        let r = signed.send(&addr, send_request(), T).await.unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        // Name-server requests are signed too.
        let e = signed.topic_route("Nowhere", T).await.unwrap_err();
        assert_eq!(
            e.response_code(),
            Some(ResponseCode::TOPIC_NOT_EXIST),
            "{ty:?}"
        );

        for (credentials, why) in [
            (
                Some(Credentials::new(ACCESS, "wrong")),
                "signature check failed",
            ),
            (Some(Credentials::new("stranger", SECRET)), "no acl config"),
            (None, "no AccessKey"),
        ] {
            let e = api(&addr, credentials, ty)
                .send(&addr, send_request(), T)
                .await
                .unwrap_err();
            assert_eq!(
                e.response_code(),
                Some(ResponseCode::NO_PERMISSION),
                "{ty:?}"
            );
            assert!(e.to_string().contains(why), "{e}");
        }
    }
    let _ = server.shutdown(T).await;
}

/// The header decodes as usual on the broker's side: the signature fields sit beside it.
#[test]
fn signed_header_still_decodes() {
    let mut cmd = RemotingCommand::request(RequestCode::SEND_MESSAGE.0);
    send_request().header.encode(&mut cmd.ext_fields);
    mq_client_api::acl::sign(&mut cmd, &Credentials::new(ACCESS, SECRET));
    let h = SendMessageRequestHeader::decode(&cmd.ext_fields).unwrap();
    assert_eq!(&*h.topic, "TopicTest");
}
