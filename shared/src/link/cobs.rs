//! Consistent Overhead Byte Stuffing: removes every `0x00` from a frame so that `0x00` can mark
//! frame ends on the line. Overhead: one byte per 254, plus one. A receiver that starts in the
//! middle of a frame, or sees garbage, resynchronises at the next `0x00`.
//!
//! Hand-written rather than the `cobs` crate so that both functions are total (no panics on any
//! input or buffer size, which the fuzz target checks) and match the C reference line by line.

/// Longest COBS encoding of `len` bytes (without the `0x00` delimiter).
pub const fn max_encoded_len(len: usize) -> usize {
    len + len / 254 + 1
}

/// COBS-encodes `src` into `dst`; returns the encoded length, or `None` when `dst` is too small.
/// The `0x00` delimiter is not written.
pub fn encode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut code_at = 0; // where the current block's code byte goes
    let mut out = 1; // next data byte position
    let mut code: u8 = 1;
    if dst.is_empty() {
        return None;
    }
    for &byte in src {
        if byte == 0 {
            *dst.get_mut(code_at)? = code;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            *dst.get_mut(out)? = byte;
            out += 1;
            code += 1;
            if code == 0xFF {
                *dst.get_mut(code_at)? = code;
                code_at = out;
                out += 1;
                code = 1;
            }
        }
    }
    *dst.get_mut(code_at)? = code;
    Some(out)
}

/// Decodes a COBS block (without its delimiter) in place; returns the decoded length, or `None`
/// when the input is not valid COBS (a `0x00` inside, or a code byte pointing past the end).
pub fn decode_in_place(buf: &mut [u8]) -> Option<usize> {
    let mut read = 0;
    let mut write = 0;
    while read < buf.len() {
        let code = buf[read];
        if code == 0 {
            return None;
        }
        read += 1;
        let end = read + usize::from(code) - 1;
        if end > buf.len() {
            return None;
        }
        while read < end {
            let byte = buf[read];
            if byte == 0 {
                return None;
            }
            buf[write] = byte;
            write += 1;
            read += 1;
        }
        // A block shorter than 254 data bytes stands for "data, then a zero" — except at the
        // very end, where the implicit zero is the delimiter itself.
        if code != 0xFF && read < buf.len() {
            buf[write] = 0;
            write += 1;
        }
    }
    Some(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(src: &[u8]) -> ([u8; 1024], usize) {
        let mut enc = [0u8; 1024];
        let n = encode(src, &mut enc).unwrap();
        assert!(n <= max_encoded_len(src.len()));
        assert!(!enc[..n].contains(&0), "no zero in the encoding");
        let mut dec = enc;
        let m = decode_in_place(&mut dec[..n]).unwrap();
        assert_eq!(&dec[..m], src);
        (enc, n)
    }

    #[test]
    fn wikipedia_examples() {
        let (e, n) = roundtrip(&[0x00]);
        assert_eq!(&e[..n], [0x01, 0x01]);
        let (e, n) = roundtrip(&[0x00, 0x00]);
        assert_eq!(&e[..n], [0x01, 0x01, 0x01]);
        let (e, n) = roundtrip(&[0x11, 0x22, 0x00, 0x33]);
        assert_eq!(&e[..n], [0x03, 0x11, 0x22, 0x02, 0x33]);
        let (e, n) = roundtrip(&[0x11, 0x00, 0x00, 0x00]);
        assert_eq!(&e[..n], [0x02, 0x11, 0x01, 0x01, 0x01]);
        let (e, n) = roundtrip(&[]);
        assert_eq!(&e[..n], [0x01]);
    }

    #[test]
    fn long_runs_without_zero() {
        let src: Vec<u8> = (1..=255u8).cycle().take(600).collect();
        roundtrip(&src);
        let src: Vec<u8> = vec![0x42; 254];
        let (e, n) = roundtrip(&src);
        assert_eq!(e[0], 0xFF);
        assert_eq!(n, 256);
    }

    #[test]
    fn invalid_input_is_refused() {
        assert_eq!(decode_in_place(&mut [0x05, 0x11]), None);
        assert_eq!(decode_in_place(&mut [0x02, 0x00]), None);
        assert_eq!(decode_in_place(&mut [0x00]), None);
    }

    #[test]
    fn small_buffer_is_refused() {
        assert_eq!(encode(&[1, 2, 3], &mut [0u8; 3]), None);
        assert_eq!(encode(&[1, 2, 3], &mut []), None);
        assert_eq!(encode(&[1, 2, 3], &mut [0u8; 4]), Some(4));
    }
}
