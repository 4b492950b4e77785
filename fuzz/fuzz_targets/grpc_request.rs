//! Fuzzes the gRPC proxy's request decoding and message conversion: no panic, and converted
//! messages keep their topic and a body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mq_grpc::fuzz_oracle::check_request(data);
});
