//! Fuzzes the broker's batch splitter: no panic, and split batches re-encode consistently.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mq_client_api::fuzz_oracle::check_batch(data);
});
