//! Replays the fuzz corpus (seeds and whatever `cargo xtask fuzz-smoke` found and was
//! committed) through the same oracle the fuzz target uses.

use std::path::Path;

#[test]
fn frame_decode_corpus_holds_its_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/frame_decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        mq_remoting::fuzz_oracle::check_frame_stream(&data);
        n += 1;
    }
    assert!(n >= 3, "the seed corpus is present");
}
