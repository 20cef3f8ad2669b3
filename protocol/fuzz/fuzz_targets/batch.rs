#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidemark_protocol::fuzzing::batch_envelope(data));
