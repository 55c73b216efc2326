//! The serial frame decoder, fed whatever the line delivers: the accumulator cuts the input
//! into frames, both decoders run on each, and every frame that decodes must re-encode to a
//! frame that decodes to the same message (so the decoder accepts nothing the encoder cannot
//! produce). Run: `cargo fuzz run link_frame -s none` (stable toolchain).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mc_protocol::link::{
    Accumulated, FrameAccumulator, decode_downlink, decode_uplink, downlink_to_vec, uplink_to_vec,
};

fuzz_target!(|data: &[u8]| {
    let mut acc = FrameAccumulator::new();
    for &byte in data {
        let Some(Accumulated::Frame(frame)) = acc.push(byte) else {
            continue;
        };
        let mut copy = frame.to_vec();
        if let Ok((address, msg)) = decode_uplink(frame) {
            let line = uplink_to_vec(address, &msg).expect("a decoded uplink re-encodes");
            let mut again = line[..line.len() - 1].to_vec();
            assert_eq!(decode_uplink(&mut again), Ok((address, msg)));
        }
        if let Ok((address, msg)) = decode_downlink(&mut copy) {
            let line = downlink_to_vec(address, &msg).expect("a decoded downlink re-encodes");
            let mut again = line[..line.len() - 1].to_vec();
            assert_eq!(decode_downlink(&mut again), Ok((address, msg)));
        }
    }
});
