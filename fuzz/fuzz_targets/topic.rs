//! Topic parsing: `mc/<id>/<kind>` and nothing else. An accepted topic has no wildcard or
//! extra level, and prints back to a topic that parses to the same thing.
//! Run: `cargo fuzz run topic -s none` (stable toolchain).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mc_protocol::ModuleTopic;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topic) = ModuleTopic::parse(text) {
        assert!(!text.contains(['+', '#']), "wildcards accepted: {text:?}");
        assert_eq!(
            text.split('/').count(),
            3,
            "extra levels accepted: {text:?}"
        );
        assert_eq!(ModuleTopic::parse(&topic.to_heapless()), Ok(topic.clone()));
        assert_eq!(ModuleTopic::parse(&topic.to_string()), Ok(topic));
    }
});
