#![no_main]
// A Kinto-style INI file, read as `serve --ini` reads it: a setting error or a value, no panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("tidemark-fuzz-{}.ini", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = tidemark_server::Settings::load(Some(&path), &[], &[]);
    }
});
