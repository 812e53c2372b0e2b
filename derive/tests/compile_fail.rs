//! Every error `#[derive(ShardedModel)]` can emit, one case per rule in `tests/ui/`, with the
//! expected compiler output beside it (`TRYBUILD=overwrite` regenerates it).

#[test]
fn every_mistake_is_a_clear_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
