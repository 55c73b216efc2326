//! The MQTT payload decoders: native (version byte + postcard) or JSON, chosen by the first
//! byte, for every message a module publishes; and the JSON-lines link decoders. Whatever
//! decodes follows the message rules (the decoders validate) and survives a round trip in the
//! encoding it came in.
//! Run: `cargo fuzz run mqtt_payload -s none` (stable toolchain).
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use mc_protocol::{Encoding, Heartbeat, Hello, Telemetry, codec, link::json, message::Message};

fn round_trip<M: Message + PartialEq + Debug>(data: &[u8]) {
    if let Ok(msg) = codec::decode::<M>(data) {
        let again =
            codec::encode(&msg, Encoding::detect(data)).expect("a decoded message re-encodes");
        assert_eq!(codec::decode::<M>(&again).expect("and decodes again"), msg);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Hello>(data);
    round_trip::<Heartbeat>(data);
    round_trip::<Telemetry>(data);
    let _ = json::decode_uplink_line(data);
    let _ = json::decode_downlink_line(data);
});
