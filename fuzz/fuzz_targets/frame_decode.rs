//! Fuzzes the RemotingCommand frame decoder: no panic, partial frames untouched, round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mq_remoting::fuzz_oracle::check_frame_stream(data);
});
