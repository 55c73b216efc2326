//! CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor): the check every
//! serial frame carries. Two bytes per frame, and for frames up to the maximum length it detects
//! every error of up to 3 flipped bits and every burst up to 16 bits — what line noise produces.
//!
//! Bitwise on purpose: it runs unchanged on a Cortex-M0 without a 512-byte table, and the C
//! reference in `hardware/c/` is the same eight lines.

/// CRC of the empty input (the initial value).
pub const INIT: u16 = 0xFFFF;

/// Continues a CRC over `bytes` (start with [`INIT`]).
pub const fn update(mut crc: u16, bytes: &[u8]) -> u16 {
    let mut i = 0;
    while i < bytes.len() {
        crc ^= (bytes[i] as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        i += 1;
    }
    crc
}

/// CRC-16/CCITT-FALSE of `bytes`.
pub const fn crc16(bytes: &[u8]) -> u16 {
    update(INIT, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        // The catalogue's check value for CRC-16/CCITT-FALSE.
        assert_eq!(crc16(b"123456789"), 0x29B1);
        assert_eq!(crc16(b""), 0xFFFF);
    }

    #[test]
    fn incremental_equals_whole() {
        let whole = crc16(b"hello, module");
        assert_eq!(update(crc16(b"hello, "), b"module"), whole);
    }
}
