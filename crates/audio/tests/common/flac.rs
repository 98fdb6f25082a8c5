//! A minimal FLAC writer for decode-cost tests: mono, 16-bit, every frame one CONSTANT
//! subframe (FLAC format, RFC 9639 §9). Minutes of audio at any rate fit in a few KB, which
//! is what makes such a file an amplification attack on a decoder that does not count what it
//! decodes. Also included by the server's tests (`crates/server/tests/common`).

/// Samples per frame (the largest block size STREAMINFO can state).
const BLOCK: u32 = 65_535;

/// A FLAC stream of `seconds` of constant `value` at `rate` Hz. `declare_length`: STREAMINFO
/// states the total sample count (an honest header); otherwise it says "unknown", as a
/// streaming encoder's or a lying one's does.
pub fn constant_flac(rate: u32, seconds: f64, value: i16, declare_length: bool) -> Vec<u8> {
    let total = (rate as f64 * seconds).round() as u64;
    let mut out = b"fLaC".to_vec();
    // Metadata block header: last block, type 0 (STREAMINFO), 34 bytes.
    out.extend_from_slice(&[0x80, 0, 0, 34]);
    let mut bits = Bits::default();
    bits.put(BLOCK as u64, 16); // min block size
    bits.put(BLOCK as u64, 16); // max block size
    bits.put(0, 24); // min frame size: unknown
    bits.put(0, 24); // max frame size: unknown
    bits.put(rate as u64, 20);
    bits.put(0, 3); // channels - 1
    bits.put(15, 5); // bits per sample - 1
    bits.put(if declare_length { total } else { 0 }, 36);
    out.extend_from_slice(&bits.bytes);
    out.extend_from_slice(&[0; 16]); // MD5: not computed
    let mut done = 0u64;
    let mut frame_no = 0u32;
    while done < total {
        let n = (total - done).min(BLOCK as u64) as u32;
        out.extend_from_slice(&frame(frame_no, n, value));
        done += n as u64;
        frame_no += 1;
    }
    out
}

fn frame(number: u32, block: u32, value: i16) -> Vec<u8> {
    // Sync code, fixed block size; block size from a 16-bit field at the header's end; rate
    // from STREAMINFO; mono; 16-bit samples.
    let mut f = vec![0xFF, 0xF8, 0x70, 0x08];
    f.extend_from_slice(&utf8_number(number));
    f.extend_from_slice(&((block - 1) as u16).to_be_bytes());
    f.push(crc8(&f));
    // Subframe: zero pad bit, type CONSTANT (000000), no wasted bits; then the value.
    f.push(0x00);
    f.extend_from_slice(&value.to_be_bytes());
    let crc = crc16(&f);
    f.extend_from_slice(&crc.to_be_bytes());
    f
}

/// The frame number in FLAC's UTF-8-like coding (up to 2^21 - 1 here).
fn utf8_number(n: u32) -> Vec<u8> {
    match n {
        0..0x80 => vec![n as u8],
        0x80..0x800 => vec![0xC0 | (n >> 6) as u8, 0x80 | (n & 0x3F) as u8],
        0x800..0x10000 => vec![
            0xE0 | (n >> 12) as u8,
            0x80 | ((n >> 6) & 0x3F) as u8,
            0x80 | (n & 0x3F) as u8,
        ],
        _ => vec![
            0xF0 | (n >> 18) as u8,
            0x80 | ((n >> 12) & 0x3F) as u8,
            0x80 | ((n >> 6) & 0x3F) as u8,
            0x80 | (n & 0x3F) as u8,
        ],
    }
}

/// CRC-8, polynomial x^8 + x^2 + x + 1, initial 0 (the frame header's).
fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// CRC-16, polynomial x^16 + x^15 + x^2 + 1, initial 0 (the whole frame's).
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Big-endian bit packing.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    used: u32,
}

impl Bits {
    fn put(&mut self, value: u64, width: u32) {
        for i in (0..width).rev() {
            if self.used.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            *self.bytes.last_mut().expect("pushed") |= bit << (7 - self.used % 8);
            self.used += 1;
        }
    }
}
