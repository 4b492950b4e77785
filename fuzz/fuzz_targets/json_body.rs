//! Fuzzes the fastjson-tolerant body reader and the pop checkpoint text: no panic, and whatever
//! parses survives emit+parse.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mq_client_api::fuzz_oracle::check_json_bodies(data);
    mq_client_api::fuzz_oracle::check_pop_checkpoint(data);
});
