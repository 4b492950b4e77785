//! Replays the committed fuzz corpora through the oracles the fuzz targets use.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        check(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "corpus {target} is present");
}

#[test]
fn json_body_corpus_holds_its_invariants() {
    replay("json_body", |data| {
        mq_client_api::fuzz_oracle::check_json_bodies(data);
        mq_client_api::fuzz_oracle::check_pop_checkpoint(data);
    });
}

#[test]
fn record_corpus_holds_its_invariants() {
    replay("stored_record", mq_client_api::fuzz_oracle::check_records);
}

#[test]
fn batch_corpus_holds_its_invariants() {
    replay("batch_body", mq_client_api::fuzz_oracle::check_batch);
}
