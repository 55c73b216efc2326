//! The message decoders behind a valid frame: the harness frames the input itself (CRC and
//! COBS), so the fuzzer explores postcard decoding and the protocol rules instead of spending
//! its time guessing CRCs. Whatever decodes must re-encode to the same frame content.
//! Run: `cargo fuzz run link_body -s none` (stable toolchain).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mc_protocol::link::{
    MAX_FRAME_LEN, MAX_WIRE_LEN, cobs, crc, decode_downlink, decode_uplink, downlink_to_vec,
    uplink_to_vec,
};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() || data.len() > MAX_FRAME_LEN - 2 {
        return;
    }
    let mut raw = data.to_vec();
    raw.extend(crc::crc16(data).to_le_bytes());
    let mut frame = [0u8; MAX_WIRE_LEN];
    let Some(n) = cobs::encode(&raw, &mut frame) else {
        return;
    };
    let mut copy = frame;
    if let Ok((address, msg)) = decode_uplink(&mut frame[..n]) {
        let line = uplink_to_vec(address, &msg).expect("a decoded uplink re-encodes");
        let mut again = line[..line.len() - 1].to_vec();
        assert_eq!(decode_uplink(&mut again), Ok((address, msg)));
    }
    if let Ok((address, msg)) = decode_downlink(&mut copy[..n]) {
        let line = downlink_to_vec(address, &msg).expect("a decoded downlink re-encodes");
        let mut again = line[..line.len() - 1].to_vec();
        assert_eq!(decode_downlink(&mut again), Ok((address, msg)));
    }
});
