//! Codec tests: the worked frames of spec §1.3 and §1.4 byte for byte, leniency, limits, and
//! property tests for round trips and stream splitting.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::error::{DecodeError, EncodeError};

const ROUTE_JSON: &str = r#"{"code":105,"extFields":{"topic":"TopicTest"},"flag":0,"language":"JAVA","opaque":1,"serializeTypeCurrentRPC":"JSON","version":315}"#;

const ROUTE_BINARY: [u8; 49] = [
    0x00, 0x00, 0x00, 0x2d, // frameLength = 45
    0x01, 0x00, 0x00, 0x29, // type=1, headerLen=41
    0x00, 0x69, // code 105
    0x00, // JAVA
    0x01, 0x3b, // version 315
    0x00, 0x00, 0x00, 0x01, // opaque 1
    0x00, 0x00, 0x00, 0x00, // flag 0
    0x00, 0x00, 0x00, 0x00, // remarkLen 0
    0x00, 0x00, 0x00, 0x14, // extLen 20
    0x00, 0x05, b't', b'o', b'p', b'i', b'c', //
    0x00, 0x00, 0x00, 0x09, b'T', b'o', b'p', b'i', b'c', b'T', b'e', b's', b't',
];

fn route_request(ty: SerializeType) -> RemotingCommand {
    RemotingCommand::request(105)
        .with_opaque(1)
        .with_ext("topic", "TopicTest")
        .with_serialize_type(ty)
}

fn encode(cmd: &RemotingCommand) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(cmd, &mut buf).unwrap();
    buf
}

#[test]
fn json_golden_frame_encodes_byte_for_byte() {
    assert_eq!(ROUTE_JSON.len(), 131);
    let buf = encode(&route_request(SerializeType::Json));
    assert_eq!(&buf[..8], &[0, 0, 0, 0x87, 0, 0, 0, 0x83]);
    assert_eq!(&buf[8..], ROUTE_JSON.as_bytes());
    assert_eq!(buf.len(), 139);
}

#[test]
fn json_golden_frame_decodes() {
    let mut buf = BytesMut::new();
    buf.put_slice(&[0, 0, 0, 0x87, 0, 0, 0, 0x83]);
    buf.put_slice(ROUTE_JSON.as_bytes());
    let cmd = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(cmd, route_request(SerializeType::Json));
}

#[test]
fn binary_golden_frame_encodes_byte_for_byte() {
    let buf = encode(&route_request(SerializeType::RocketMq));
    assert_eq!(&buf[..], &ROUTE_BINARY[..]);
}

#[test]
fn binary_golden_frame_decodes() {
    let mut buf = BytesMut::from(&ROUTE_BINARY[..]);
    let cmd = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(cmd, route_request(SerializeType::RocketMq));
}

/// ROUTE_BINARY with its ext field replaced by `key` → `value` (lengths fixed up).
/// A ROCKETMQ frame of ROUTE_BINARY's fixed fields with `fields` as its ext fields, in order.
fn binary_with_fields(fields: &[(&[u8], &[u8])]) -> BytesMut {
    let ext_len: usize = fields.iter().map(|(k, v)| 6 + k.len() + v.len()).sum();
    let header_len = 17 + 4 + ext_len;
    let mut buf = BytesMut::new();
    buf.put_u32(u32::try_from(4 + header_len).unwrap());
    buf.put_u8(1);
    buf.put_uint(header_len as u64, 3);
    // code, language, version, opaque, flag and the empty remark, as in ROUTE_BINARY.
    buf.put_slice(&ROUTE_BINARY[8..25]);
    buf.put_u32(u32::try_from(ext_len).unwrap());
    for (key, value) in fields {
        buf.put_u16(u16::try_from(key.len()).unwrap());
        buf.put_slice(key);
        buf.put_u32(u32::try_from(value.len()).unwrap());
        buf.put_slice(value);
    }
    buf
}

fn binary_with_field(key: &[u8], value: &[u8]) -> BytesMut {
    binary_with_fields(&[(key, value)])
}

#[test]
fn binary_fields_out_of_order_or_repeated_read_as_a_map() {
    let mut buf = binary_with_fields(&[(b"z", b"1"), (b"k", b"2"), (b"z", b"3"), (b"kk", b"")]);
    let cmd = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        cmd.ext_fields.iter().collect::<Vec<_>>(),
        vec![("k", "2"), ("kk", ""), ("z", "3")]
    );
}

#[test]
fn binary_fields_must_each_be_utf8() {
    let decode = |key: &[u8], value: &[u8]| {
        FrameCodec::default()
            .decode(&mut binary_with_field(key, value))
            .map(|c| c.map(|c| c.ext_fields))
    };
    let ok = decode("clé".as_bytes(), "valeur é".as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(ok.get("clé"), Some("valeur é"));
    // "é" is C3 A9: split between key and value, the text as a whole is UTF-8 but neither
    // field is.
    assert_eq!(decode(b"k\xC3", b"\xA9v"), Err(DecodeError::InvalidUtf8));
    assert_eq!(decode(b"k", b"\xFF"), Err(DecodeError::InvalidUtf8));
}

#[test]
fn partial_frame_is_not_consumed() {
    for cut in 0..ROUTE_BINARY.len() {
        let mut buf = BytesMut::from(&ROUTE_BINARY[..cut]);
        assert_eq!(
            FrameCodec::default().decode(&mut buf),
            Ok(None),
            "cut at {cut}"
        );
        assert_eq!(&buf[..], &ROUTE_BINARY[..cut]);
    }
}

#[test]
fn decode_consumes_exactly_one_frame() {
    let mut buf = BytesMut::from(&ROUTE_BINARY[..]);
    buf.put_slice(&ROUTE_BINARY[..10]);
    let codec = FrameCodec::default();
    assert!(codec.decode(&mut buf).unwrap().is_some());
    assert_eq!(&buf[..], &ROUTE_BINARY[..10]);
}

#[test]
fn body_is_the_rest_of_the_frame() {
    let cmd = RemotingCommand::request(310).with_body(&b"hello"[..]);
    let mut buf = encode(&cmd);
    let back = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(&back.body[..], b"hello");
}

#[test]
fn oversize_length_prefix_is_rejected_before_the_frame_arrives() {
    let mut buf = BytesMut::from(&[0x00, 0xFF, 0xFF, 0xFD][..]); // 16777213 + 4 > 16 MiB
    let err = FrameCodec::default().decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        DecodeError::FrameTooLarge {
            len: 16_777_217,
            max: DEFAULT_MAX_FRAME_LEN
        }
    );
    // Nothing was reserved for the announced frame.
    assert!(buf.capacity() < 1024);
}

#[test]
fn largest_legal_length_prefix_is_accepted() {
    let buf = [0x00, 0xFF, 0xFF, 0xFC]; // 16777212: the largest Java accepts
    assert_eq!(FrameCodec::default().check(&buf), Ok(None));
}

#[test]
fn negative_length_prefix_is_rejected() {
    let codec = FrameCodec::new(usize::MAX);
    let err = codec.check(&[0x80, 0, 0, 0]).unwrap_err();
    assert!(matches!(err, DecodeError::FrameTooLarge { .. }));
}

#[test]
fn header_longer_than_frame_is_rejected() {
    let mut buf = BytesMut::from(&[0, 0, 0, 6, 1, 0, 0, 9, 0, 0][..]);
    assert_eq!(
        FrameCodec::default().decode(&mut buf),
        Err(DecodeError::HeaderLengthExceedsFrame {
            header: 9,
            available: 2
        })
    );
}

#[test]
fn unknown_serialize_type_is_rejected() {
    let mut buf = BytesMut::from(&[0, 0, 0, 4, 7, 0, 0, 0][..]);
    assert_eq!(
        FrameCodec::default().decode(&mut buf),
        Err(DecodeError::UnknownSerializeType(7))
    );
}

#[test]
fn lying_lengths_inside_a_binary_header_are_errors() {
    let mut header = ROUTE_BINARY[8..].to_vec();
    header[20] = 0x7f; // extLen now far larger than the header
    let mut frame = BytesMut::new();
    frame.put_u32(4 + header.len() as u32);
    frame.put_u32((1 << 24) | header.len() as u32);
    frame.put_slice(&header);
    assert!(matches!(
        FrameCodec::default().decode(&mut frame),
        Err(DecodeError::InvalidLength(_))
    ));
}

fn json_frame(json: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(4 + json.len() as u32);
    buf.put_u32(json.len() as u32);
    buf.put_slice(json.as_bytes());
    buf
}

#[test]
fn json_decoding_tolerates_what_other_clients_send() {
    // No serializeTypeCurrentRPC, numbers and booleans in extFields, unknown fields, no remark.
    let json = r#"{"code":310,"language":"CPP","version":63,"opaque":7,"flag":0,"extFields":{"a":"pg","e":0,"k":false,"nullish":null},"unknownField":{"x":[1,2]}}"#;
    let cmd = FrameCodec::default()
        .decode(&mut json_frame(json))
        .unwrap()
        .unwrap();
    assert_eq!(cmd.code, 310);
    assert_eq!(cmd.language, LanguageCode::Cpp);
    assert_eq!(cmd.version, 63);
    assert_eq!(cmd.opaque, 7);
    assert_eq!(cmd.remark, None);
    assert_eq!(cmd.ext("a"), Some("pg"));
    assert_eq!(cmd.ext("e"), Some("0"));
    assert_eq!(cmd.ext("k"), Some("false"));
    assert_eq!(cmd.ext("nullish"), None);
}

#[test]
fn json_decoding_accepts_null_ext_fields_and_remark_and_ordinal_language() {
    let json = r#"{"code":0,"extFields":null,"flag":1,"language":9,"opaque":3,"remark":null,"version":"315"}"#;
    let cmd = FrameCodec::default()
        .decode(&mut json_frame(json))
        .unwrap()
        .unwrap();
    assert!(cmd.is_response());
    assert_eq!(cmd.language, LanguageCode::Go);
    assert_eq!(cmd.version, 315);
    assert!(cmd.ext_fields.is_empty());
}

#[test]
fn json_escapes_property_separators() {
    let cmd = RemotingCommand::request(310).with_ext("i", "TAGS\u{1}a\u{2}");
    let buf = encode(&cmd);
    let text = std::str::from_utf8(&buf[8..]).unwrap();
    assert!(text.contains(r#""i":"TAGS\u0001a\u0002""#), "{text}");
    let mut buf = buf;
    let back = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(back, cmd);
}

#[test]
fn binary_header_rejects_codes_above_16_bits() {
    let cmd = RemotingCommand::request(200_050).with_serialize_type(SerializeType::RocketMq);
    let mut buf = BytesMut::from(&b"keep"[..]);
    let err = FrameCodec::default().encode(&cmd, &mut buf).unwrap_err();
    assert_eq!(
        err,
        EncodeError::NotRepresentable {
            field: "code",
            value: 200_050
        }
    );
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn encode_rejects_frames_over_the_limit() {
    let cmd = RemotingCommand::request(10).with_body(vec![0u8; 100]);
    let mut buf = BytesMut::new();
    let err = FrameCodec::new(64).encode(&cmd, &mut buf).unwrap_err();
    assert!(matches!(err, EncodeError::FrameTooLarge { .. }));
    assert!(buf.is_empty());
}

#[test]
fn flags_and_languages() {
    let mut cmd = RemotingCommand::request(1);
    assert!(!cmd.is_response() && !cmd.is_oneway());
    cmd.mark_oneway();
    assert_eq!(cmd.flag, 2);
    let resp = RemotingCommand::response_to(&cmd, 0, None);
    assert_eq!(resp.flag, 1);
    for b in 0..=13u8 {
        let l = LanguageCode::from_byte(b);
        assert_eq!(l.to_byte(), b);
        assert_eq!(LanguageCode::from_name(l.name()), Some(l));
    }
    assert_eq!(LanguageCode::from_byte(12).name(), "RUST");
    assert_eq!(LanguageCode::from_byte(200), LanguageCode::Unknown(200));
}

#[test]
fn json_fast_reader_cases_match_serde() {
    let cases: &[&str] = &[
        r#"{"code":310,"extFields":{"a":"g","n":"p\u0001q\u0002\ud83d\ude00\n\"\/"},"flag":0,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":315}"#,
        r#" { "code" : "12 " , "flag" : null , "language" : 9 , "remark" : null , "extFields" : null } "#,
        r#"{"extFields":{"k":"1","k":"2","z":null,"a":""},"language":"KLINGON","opaque":-1}"#,
        r#"{"opaque":-0}"#,
        r#"{"extFields":{"k":1}}"#,
        r#"{"extFields":{"k":true}}"#,
        r#"{"code":1.0}"#,
        r#"{"code":1,"code":2}"#,
        r#"{"other":{"x":1},"code":3}"#,
        r#"{"other":[1,2],"code":3}"#,
        r#"{"other":true,"more":-12,"code":3}"#,
        r#"{"remark":"\ud800"}"#,
        r#"{"remark":"\udc00x"}"#,
        r#"{"language":-3}"#,
        r#"{"language":"\u004aAVA"}"#,
        r#"{"remark":"\u00e9\u00A9\u001f\u0000","extFields":{"\u0061":"\u00Ff"}}"#,
        r#"{"remark":"\u00zz"}"#,
        r#"{"remark":"\u00"}"#,
        r#"{"code":99999999999}"#,
        r#"{"code":-2147483648,"opaque":2147483647,"flag":-7,"version":0}"#,
        r#"{"code":2147483648}"#,
        r#"{"other":-9223372036854775808,"code":1}"#,
        r#"{"other":9223372036854775808,"code":1}"#,
        r#"{"other":-9223372036854775809,"code":1}"#,
        r#"{"other":18446744073709551616,"code":1}"#,
        r#"{"other":00000000000000000001,"code":1}"#,
        r#"{"extFields":{"a" :"b", "c": "d" ,"e":"f"	}}"#,
        r#"{"extFields":{"a":"b\u0001","c":null,"d":"e"},"code":2}"#,
        r#"{"extFields":{"a":"b"x}}"#,
        r#"{"extFields":{"a"x:"b"}}"#,
        r#"{"code":-}"#,
        r#"{"code":-01}"#,
        r#"{"code":1,}"#,
        r#"{"code":0123}"#,
        // One to three digits are read by their pattern: leading zeros are refused there too.
        r#"{"code":01,"flag":0}"#,
        r#"{"flag":00}"#,
        r#"{"code":012}"#,
        r#"{"opaque":001}"#,
        r#"{"code":7,"flag":42,"opaque":310,"version":4000}"#,
        r#"{"code":10}"#,
        r#"{"code":100,"flag":99,"version":999}"#,
        r#"{"code":123456789,"opaque":1234567890,"version":0}"#,
        r#"{"code":12345678901}"#,
        r#"{"code" :1,"flag": 2,"opaque" : 3}"#,
        r#"{"codex":1,"cod":2,"c":3,"versions":4,"extFieldsX":"y"}"#,
        r#"{"serializeTypeCurrentRPC":"ROCKETMQ","code":2}"#,
        r#"{"serializeTypeCurrentRPC":"JSON" ,"code":2}"#,
        r#"{"serializeTypeCurrentRPC":"JSONX","code":2}"#,
        r#"{"serializeTypeCurrentRPC":5,"code":2}"#,
        r#"{"language":"RUST","code":2}"#,
        r#"{"language":"JA"VA"}"#,
        r#"{"language": "GO"}"#,
        r#"{"extFields":{"b":"1","a":"2"}}"#,
        r#"{"extFields":{"b":"1","a":"2","c":"3"}}"#,
        r#"{"extFields":{"a":"1","a":"2"}}"#,
        r#"{}"#,
        r#"{} x"#,
        r#"[]"#,
        "",
    ];
    for case in cases {
        let fast = json::decode_header(case.as_bytes());
        let serde = json::decode_header_serde(case.as_bytes());
        assert_eq!(fast, serde, "{case}");
    }
    // Numbers as writers put them are the fast reader's own, not left to serde.
    for case in [
        r#"{"code":7,"flag":42,"opaque":310,"version":4000}"#,
        r#"{"code":100,"flag":99,"version":999}"#,
    ] {
        let fast = json::fast::decode(case.as_bytes());
        assert_eq!(
            fast,
            json::decode_header_serde(case.as_bytes()).ok(),
            "{case}"
        );
    }
    let cmd = json::decode_header(cases[0].as_bytes()).unwrap();
    assert_eq!(cmd.ext("n"), Some("p\u{1}q\u{2}\u{1f600}\n\"/"));
    let cmd = json::decode_header(cases[2].as_bytes()).unwrap();
    assert_eq!(
        cmd.ext_fields.iter().collect::<Vec<_>>(),
        vec![("a", ""), ("k", "2")]
    );
}

/// The fast reader refuses bytes that are not UTF-8 as serde refuses them, next to an escape
/// and inside or outside the fields, and reads multi-byte text beside escapes back whole.
#[test]
fn json_fast_reader_refuses_what_is_not_utf8_as_serde_does() {
    let cases: &[&[u8]] = &[
        b"{\"extFields\":{\"a\":\"\\u0001\xc3\"}}",
        b"{\"extFields\":{\"a\":\"\xc3\\u00a9\"}}",
        b"{\"extFields\":{\"a\":\"\xa9\\n\"}}",
        b"{\"extFields\":{\"a\":\"\\n\xa9\"}}",
        b"{\"extFields\":{\"\\u0061\xff\":\"b\"}}",
        b"{\"extFields\":{\"a\":\"b\"},\"remark\":\"\xc3\"}",
        b"{\"extFields\":{\"a\":\"b\"},\"other\":\"\xff\"}",
        b"{\"remark\":\"x\\n\xc3\"}",
        b"{\"other\":\"\xc3\",\"code\":1}",
        b"{\"language\":\"J\xc3\"}",
        b"{\"code\":1}\xc3",
        // Valid: multi-byte text beside escapes, in keys, values and the remark.
        "{\"extFields\":{\"a\":\"\\u0001\u{e9}\u{1f600}\\u0002\u{e9}\",\"b\":\"\u{e9}\"}}"
            .as_bytes(),
        "{\"extFields\":{\"\\u0001\u{e9}\":\"\\\"\u{20ac}\"},\"remark\":\"\u{e9}\\n\"}".as_bytes(),
    ];
    for case in cases {
        let fast = json::decode_header(case);
        let serde = json::decode_header_serde(case);
        assert_eq!(fast, serde, "{}", String::from_utf8_lossy(case));
    }
    let cmd = json::decode_header(cases[11]).unwrap();
    assert_eq!(cmd.ext("a"), Some("\u{1}\u{e9}\u{1f600}\u{2}\u{e9}"));
    assert_eq!(cmd.ext("b"), Some("\u{e9}"));
    let cmd = json::decode_header(cases[12]).unwrap();
    assert_eq!(cmd.ext("\u{1}\u{e9}"), Some("\"\u{20ac}"));
    assert_eq!(cmd.remark.as_deref(), Some("\u{e9}\n"));
}

/// Long fields (whose length bytes are not ASCII), escaped JSON strings, multi-byte text and
/// fields added after decoding all read back as they were written.
#[test]
fn decoded_fields_read_back_long_escaped_or_added_later() {
    let long = "x".repeat(200);
    let accents = "é".repeat(100);
    for ty in [SerializeType::RocketMq, SerializeType::Json] {
        let cmd = RemotingCommand::request(310)
            .with_serialize_type(ty)
            .with_ext("a", "plain")
            .with_ext("i", "TAGS\u{1}TagA\u{2}KEYS\u{1}k \"q\"\u{2}")
            .with_ext("long", &long)
            .with_ext("accents", &accents);
        let mut back = FrameCodec::default()
            .decode(&mut encode(&cmd))
            .unwrap()
            .unwrap();
        assert_eq!(back, cmd, "{ty:?}");
        back.ext_fields.insert("added", "later");
        back.ext_fields.insert("a", "replaced");
        assert_eq!(back.ext("added"), Some("later"));
        assert_eq!(back.ext("a"), Some("replaced"));
        assert_eq!(back.ext("long"), Some(long.as_str()));
        assert_eq!(back.ext("accents"), Some(accents.as_str()));
        assert_eq!(back.ext("i"), cmd.ext("i"));
        // A clone reads the same text.
        assert_eq!(back.clone().ext_fields, back.ext_fields);
    }
}

fn arb_command() -> impl Strategy<Value = RemotingCommand> {
    (
        any::<i16>(),
        0u8..14,
        any::<i16>(),
        any::<i32>(),
        0i32..4,
        proptest::option::of("\\PC{1,20}"),
        proptest::collection::btree_map("\\PC{0,8}", "\\PC{0,16}|\\PC{60,90}", 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(
            |(code, lang, version, opaque, flag, remark, ext, body, json)| RemotingCommand {
                code: i32::from(code),
                language: LanguageCode::from_byte(lang),
                version: i32::from(version),
                opaque,
                flag,
                remark,
                ext_fields: ext.into_iter().collect(),
                body: Bytes::from(body),
                serialize_type: if json {
                    SerializeType::Json
                } else {
                    SerializeType::RocketMq
                },
            },
        )
}

/// A typed header made of whatever fields a test gives, in the order given.
#[derive(Debug)]
struct GivenFields(Vec<(&'static str, Result<i64, String>)>);

impl TypedFields for GivenFields {
    fn write_fields(&self, sink: &mut dyn FieldSink) {
        for (k, v) in &self.0 {
            match v {
                Ok(n) => sink.int_field(k, *n),
                Err(text) => sink.str_field(k, text),
            }
        }
    }

    fn text_len_hint(&self) -> usize {
        self.0
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or_else(String::len, |_| 20))
            .sum()
    }
}

fn arb_given_fields() -> impl Strategy<Value = Vec<(&'static str, Result<i64, String>)>> {
    proptest::collection::vec(
        (
            prop::sample::select(vec![
                "a",
                "b",
                "c",
                "k",
                "n",
                "zz",
                "\u{e9}",
                "q\"t",
                "\u{1}",
                // Keys of 2 to 16 bytes are checked a word at a time: stops at either end
                // and in the middle, and lengths on each side of the word sizes.
                "d\"",
                "\\d",
                "dd\u{1f}d",
                "ee\"eee",
                "msgId",
                "MSG_REGION",
                "queueOffset",
                "f\u{7}ffffffff",
                "ggggggggggg\\",
                "hhhhhhhh\"hhhhhhh",
                "iiiiiiiiiiiiiiii",
                "jjjjjjjjjjjjjjjjj",
                "k\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            ]),
            prop_oneof![
                any::<i64>().prop_map(Ok),
                // One digit, and either side of it, as most numbers of a send header are.
                (-12i64..=12).prop_map(Ok),
                "(\\PC|[\\x00-\\x1f\"\\\\]){0,40}".prop_map(Err),
            ],
        ),
        0..8,
    )
}

proptest! {
    /// Typed fields give the bytes of the same fields inserted one by one, in both codecs,
    /// also when they come out of order or repeated; read or changed, they are those fields.
    #[test]
    fn typed_fields_encode_as_the_same_fields_inserted(
        given in arb_given_fields(),
        json in any::<bool>(),
    ) {
        let ty = if json { SerializeType::Json } else { SerializeType::RocketMq };
        let mut inserted = ExtFields::new();
        for (k, v) in &given {
            match v {
                Ok(n) => inserted.insert_int(k, *n),
                Err(text) => inserted.insert(*k, text),
            }
        }
        let plain = RemotingCommand::request(310)
            .with_serialize_type(ty)
            .with_ext_fields(inserted.clone());
        let typed = RemotingCommand::request(310)
            .with_serialize_type(ty)
            .with_ext_fields(ExtFields::typed(std::sync::Arc::new(GivenFields(given.clone()))));
        let bytes = encode(&typed);
        prop_assert_eq!(&bytes, &encode(&plain));
        let mut buf = bytes;
        prop_assert_eq!(FrameCodec::default().decode(&mut buf).unwrap().unwrap(), plain.clone());
        prop_assert_eq!(&typed.ext_fields, &inserted);
        prop_assert_eq!(typed.ext_fields.get("k"), inserted.get("k"));
        let (mut changed, mut expected) = (typed.ext_fields.clone(), inserted);
        changed.insert("b", "changed");
        expected.insert("b", "changed");
        prop_assert_eq!(changed.iter().collect::<Vec<_>>(), expected.iter().collect::<Vec<_>>());
    }
}

proptest! {
    #[test]
    fn decode_inverts_encode(cmd in arb_command()) {
        let mut buf = encode(&cmd);
        let back = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(back, cmd);
    }

    #[test]
    fn splitting_the_stream_anywhere_yields_the_same_frames(
        cmds in proptest::collection::vec(arb_command(), 1..4),
    ) {
        let mut stream = BytesMut::new();
        for c in &cmds {
            FrameCodec::default().encode(c, &mut stream).unwrap();
        }
        let stream = stream.freeze();
        for cut in 0..=stream.len() {
            let codec = FrameCodec::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                buf.extend_from_slice(part);
                while let Some(c) = codec.decode(&mut buf).unwrap() {
                    out.push(c);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&out, &cmds);
        }
    }

    /// The fast JSON reader gives what the serde reader gives, on our own output and on that
    /// output cut, spliced or mutated anywhere (where it accepts at all).
    #[test]
    fn fast_json_reader_agrees_with_serde(
        cmd in arb_command(),
        cut in any::<prop::sample::Index>(),
        junk in prop::sample::select(vec![
            "", " ", "\\", "\"", "\\u", "\\ud83d", "\\u00e9", "null", "1", "-0", "01",
            "1.5", "1e3", ",", "}", "{", ":", "\"x\":", "true", "\u{1}", "\u{e9}", "[]",
        ]),
        drop in 0usize..3,
    ) {
        let mut head = BytesMut::new();
        json::encode_header(&cmd, &mut head);
        let fast = json::decode_header(&head).unwrap();
        prop_assert_eq!(&fast, &json::decode_header_serde(&head).unwrap());
        let at = cut.index(head.len() + 1);
        let mut spliced = head[..at].to_vec();
        spliced.extend_from_slice(junk.as_bytes());
        spliced.extend_from_slice(&head[(at + drop).min(head.len())..]);
        let fast = json::decode_header(&spliced).ok();
        let serde = json::decode_header_serde(&spliced).ok();
        prop_assert_eq!(fast, serde);
    }

    /// The word-at-a-time scan finds the same first quote, backslash or control byte as a
    /// byte-by-byte one, at every alignment and next to bytes of 0x80 and above.
    #[test]
    fn word_scan_finds_the_first_byte_to_escape(
        bytes in proptest::collection::vec(
            prop::sample::select(vec![0u8, 1, 0x1f, 0x20, 0x21, b'"', b'#', b'[', b'\\', b']',
                b'a', 0x7f, 0x80, 0xa0, 0xa2, 0xdc, 0xff]),
            0..40,
        ),
    ) {
        let naive = bytes.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\');
        prop_assert_eq!(json::find_stop(&bytes), naive);
    }

    /// Header strings are written as serde_json writes them, also when their escapes make the
    /// header longer than the room first made for it.
    #[test]
    fn json_strings_are_written_as_serde_json_writes_them(
        value in "(\\PC|[\\x00-\\x1f\"\\\\]){0,300}",
    ) {
        let mut cmd = RemotingCommand::request(310).with_ext("k", &value);
        cmd.remark = Some(value.clone());
        let buf = encode(&cmd);
        let text = std::str::from_utf8(&buf[8..]).unwrap();
        let quoted = serde_json::to_string(&value).unwrap();
        prop_assert!(text.contains(&format!(r#""extFields":{{"k":{quoted}}}"#)), "{}", text);
        prop_assert!(text.contains(&format!(r#""remark":{quoted}"#)), "{}", text);
        let mut buf = buf;
        prop_assert_eq!(FrameCodec::default().decode(&mut buf).unwrap().unwrap(), cmd);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = FrameCodec::default().decode(&mut buf);
    }
}
