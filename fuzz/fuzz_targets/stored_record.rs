//! Fuzzes the stored-record decoder: no panic, and decoded records re-encode consistently.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mq_client_api::fuzz_oracle::check_records(data);
});
