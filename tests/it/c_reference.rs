//! The C reference implementation (`hardware/c/`) agrees with the Rust one: compiled here with
//! the system C compiler, strict and under AddressSanitizer + UBSan, and run on the golden
//! vectors and on a differential file written from the Rust implementation (random messages
//! that C must encode byte for byte, random and mutated frames that C must decode to the same
//! message or the same error).
//!
//! A missing or failing compiler fails the test (with the compiler's output): `scripts/test`
//! installs `gcc`. Nothing here is skipped. The flags match `hardware/c/Makefile`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use mc_protocol::{
    Command as HubCommand, CommandAction, FirmwareVersion, Heartbeat, ModuleId, ReadingName,
    link::{
        Accept, Ack, CommandResult, Downlink, FrameError, LinkError, LinkHello, LinkTelemetry,
        RefuseReason, Uplink, cobs, crc, decode_downlink, downlink_to_vec, uplink_to_vec,
    },
};

const STRICT: &[&str] = &[
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
    "-Wshadow",
    "-Wconversion",
    "-Wstrict-prototypes",
    "-Wmissing-prototypes",
];
const SANITIZE: &[&str] = &[
    "-O1",
    "-g",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Compiles `hardware/c` into `out` with `extra` flags; panics with the compiler's output.
fn compile(out: &Path, extra: &[&str]) {
    let c = repo().join("hardware/c");
    compile_with(
        out,
        extra,
        &[&c.join("mclink.c"), &c.join("test_vectors.c")],
    );
}

/// Runs the C compiler (`$CC`, else `cc`) with the strict flags, `extra` and `sources`.
fn compile_with(out: &Path, extra: &[&str], sources: &[&Path]) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(&cc)
        .args(STRICT)
        .args(extra)
        .arg("-o")
        .arg(out)
        .args(sources)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the C compiler `{cc}` ({e}): install one (Debian: apt-get install \
                 gcc libc6-dev; scripts/test does) or set CC"
            )
        });
    assert!(
        output.status.success(),
        "`{cc} {} {}` failed ({}):\n{}{}",
        STRICT.join(" "),
        extra.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the C test program on the golden vectors and `diff`; panics with its output.
fn run(program: &Path, diff: &Path) {
    let vectors = repo().join("hardware/vectors/link-v1.txt");
    let output = Command::new(program)
        .arg(&vectors)
        .arg(diff)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stdout}{stderr}",
        program.display(),
        output.status
    );
    // The C program names what it ran; make sure every part did.
    for part in [
        "vectors: 20",
        "differential: ",
        "robustness: ",
        "checks passed",
    ] {
        assert!(
            stdout.contains(part),
            "no `{part}` in the output:\n{stdout}"
        );
    }
    println!("{stdout}");
}

fn build_and_run(extra: &[&str], name: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let diff = dir.path().join("diff.txt");
    std::fs::write(&diff, differential_cases()).expect("write the differential file");
    let program = dir.path().join(name);
    compile(&program, extra);
    run(&program, &diff);
}

#[test]
fn c_reference_matches_rust_strict_build() {
    build_and_run(&["-O2"], "test_vectors");
}

#[test]
fn c_reference_matches_rust_under_sanitizers() {
    build_and_run(SANITIZE, "test_vectors_san");
}

#[test]
fn c_reference_usage_example_compiles() {
    // The example in mclink.h's doc comment, between its markers, as `make test-example` does.
    let c = repo().join("hardware/c");
    let header = std::fs::read_to_string(c.join("mclink.h")).expect("read mclink.h");
    let lines: Vec<&str> = header.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == " * ---- example.c ----")
        .expect("example start marker in mclink.h");
    let end = lines
        .iter()
        .position(|l| *l == " * ---- end of example ----")
        .expect("example end marker in mclink.h");
    let example: String = lines[start + 1..end]
        .iter()
        .map(|l| {
            let l = l.strip_prefix(" *").unwrap_or(l);
            format!("{}\n", l.strip_prefix(' ').unwrap_or(l))
        })
        .collect();
    assert!(example.contains("int main(void)"), "{example}");
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("example.c");
    std::fs::write(&source, example).expect("write example.c");
    let include = format!("-I{}", c.display());
    compile_with(&dir.path().join("example.o"), &["-c", &include], &[&source]);
}

// ---- The differential file ----

/// xorshift64*: deterministic, so a failure names a line that stays the same from run to run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
    /// A u32 of any magnitude (each varint length equally likely), or a range corner.
    fn u32(&mut self) -> u32 {
        const CORNERS: [u32; 8] = [0, 1, 99, 100, 127, 128, 86_400_000, 86_400_001];
        match self.below(4) {
            0 => CORNERS[self.below(CORNERS.len() as u64) as usize],
            1 => u32::MAX - self.below(2) as u32,
            _ => (self.next() >> self.below(64)) as u32,
        }
    }
    fn u64(&mut self) -> u64 {
        if self.below(8) == 0 {
            u64::MAX
        } else {
            self.next() >> self.below(64)
        }
    }
    fn pick(&mut self, from: &[u8]) -> u8 {
        from[self.below(from.len() as u64) as usize]
    }
}

/// Lowercase hex; `-` for no bytes (the file is space-separated).
fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".to_owned();
    }
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn address(rng: &mut Rng) -> u8 {
    match rng.below(4) {
        0 | 1 => 0,
        2 => [5, 247, 255][rng.below(3) as usize],
        _ => rng.byte(),
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn module_id(rng: &mut Rng) -> ModuleId {
    let len = 3 + rng.below(30) as usize;
    let mut s = String::from(rng.pick(ALNUM) as char);
    while s.len() < len {
        s.push(
            rng.pick(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") as char,
        );
    }
    ModuleId::new(&s).expect("valid id")
}

fn firmware_version(rng: &mut Rng) -> FirmwareVersion {
    // No spaces (the file is space-separated); multi-byte UTF-8 now and then.
    const PIECES: &[&str] = &[
        "1", "0", ".", "-", "rc", "+", "b7", "\u{3b1}", "\u{e9}", "\u{20ac}",
    ];
    let target = 1 + rng.below(16) as usize;
    let mut s = String::new();
    loop {
        let piece = PIECES[rng.below(PIECES.len() as u64) as usize];
        if s.len() + piece.len() > target {
            break;
        }
        s.push_str(piece);
    }
    if s.is_empty() {
        s.push('1');
    }
    FirmwareVersion::new(&s).expect("valid version")
}

fn reading_names(rng: &mut Rng) -> Vec<ReadingName> {
    let count = if rng.below(8) == 0 { 32 } else { rng.below(33) };
    let mut names = Vec::new();
    while (names.len() as u64) < count {
        let len = 1 + rng.below(24) as usize;
        let mut s =
            String::from(rng.pick(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") as char);
        while s.len() < len {
            s.push(rng.pick(b"abcdefghijklmnopqrstuvwxyz0123456789_.-") as char);
        }
        let name = ReadingName::new(&s).expect("valid name");
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn finite_f32(rng: &mut Rng) -> f32 {
    const CORNERS: [f32; 6] = [0.0, -0.0, f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45];
    if rng.below(6) == 0 {
        return CORNERS[rng.below(6) as usize];
    }
    loop {
        let v = f32::from_bits(rng.next() as u32);
        if v.is_finite() {
            return v;
        }
    }
}

fn link_error(rng: &mut Rng) -> LinkError {
    match rng.below(5) {
        0 => LinkError::FrameTooLong,
        1 => LinkError::CrcMismatch,
        2 => LinkError::UnknownMessage,
        3 => LinkError::VersionMismatch {
            supported: rng.byte(),
        },
        _ => LinkError::Malformed,
    }
}

fn link_error_fields(e: LinkError) -> (u8, u8) {
    match e {
        LinkError::FrameTooLong => (0, 0),
        LinkError::CrcMismatch => (1, 0),
        LinkError::UnknownMessage => (2, 0),
        LinkError::VersionMismatch { supported } => (3, supported),
        LinkError::Malformed => (4, 0),
    }
}

/// A random uplink and its fields as the C test reads them.
fn uplink(rng: &mut Rng) -> (Uplink, String) {
    match rng.below(5) {
        0 => {
            let hello = LinkHello {
                protocol: if rng.below(4) == 0 { rng.byte() } else { 1 },
                module: module_id(rng),
                fw: firmware_version(rng),
                heartbeat_ms: 100 + rng.below(86_400_000 - 99) as u32,
                telemetry_ms: [100, 86_400_000, 100 + rng.below(100_000) as u32]
                    [rng.below(3) as usize],
                readings: reading_names(rng).into_iter().collect(),
            };
            let mut fields = format!(
                "hello {} {} {} {} {} {}",
                hello.protocol,
                hello.module,
                hello.fw,
                hello.heartbeat_ms,
                hello.telemetry_ms,
                hello.readings.len()
            );
            for name in &hello.readings {
                write!(fields, " {name}").unwrap();
            }
            (Uplink::Hello(hello), fields)
        }
        1 => {
            let (seq, uptime_ms) = (rng.u32(), rng.u64());
            (
                Uplink::Heartbeat(Heartbeat { seq, uptime_ms }),
                format!("heartbeat {seq} {uptime_ms}"),
            )
        }
        2 => {
            let mask = match rng.below(4) {
                0 => u32::MAX,
                1 => 0,
                _ => rng.next() as u32 >> rng.below(32),
            };
            let values: Vec<f32> = (0..mask.count_ones()).map(|_| finite_f32(rng)).collect();
            let seq = rng.u32();
            let mut fields = format!("telemetry {seq} {mask} {}", values.len());
            for v in &values {
                write!(fields, " {:08x}", v.to_bits()).unwrap();
            }
            let values = values.into_iter().collect();
            (
                Uplink::Telemetry(LinkTelemetry { seq, mask, values }),
                fields,
            )
        }
        3 => {
            let command = rng.u32();
            let (result, code) = match rng.below(3) {
                0 => (CommandResult::Done, 0),
                1 => (CommandResult::InvalidArgument, 1),
                _ => (CommandResult::Unsupported, 2),
            };
            (
                Uplink::Ack(Ack { command, result }),
                format!("ack {command} {code}"),
            )
        }
        _ => {
            let e = link_error(rng);
            let (code, supported) = link_error_fields(e);
            (Uplink::Error(e), format!("error {code} {supported}"))
        }
    }
}

fn downlink(rng: &mut Rng) -> Downlink {
    match rng.below(4) {
        0 => Downlink::Accept(Accept {
            protocol: rng.byte(),
            heartbeat_ms: rng.u32(),
            telemetry_ms: rng.u32(),
        }),
        1 => {
            let action = match rng.below(4) {
                0 => CommandAction::SetHeartbeatInterval { ms: rng.u32() },
                1 => CommandAction::SetTelemetryInterval { ms: rng.u32() },
                2 => CommandAction::ResendState,
                _ => CommandAction::Reboot,
            };
            Downlink::Command(HubCommand {
                id: rng.u32(),
                action,
            })
        }
        2 => Downlink::Error(link_error(rng)),
        _ => Downlink::Refuse(
            [
                RefuseReason::UnknownModule,
                RefuseReason::Disabled,
                RefuseReason::HandshakeRequired,
                RefuseReason::InvalidHello,
                RefuseReason::Duplicate,
            ][rng.below(5) as usize],
        ),
    }
}

/// What the Rust decoder makes of `frame`, in the C test's words.
fn rust_verdict(frame: &[u8]) -> String {
    let mut copy = frame.to_vec();
    match decode_downlink(&mut copy) {
        Ok((address, msg)) => {
            let fields = match msg {
                Downlink::Accept(a) => {
                    format!(
                        "accept {} {} {}",
                        a.protocol, a.heartbeat_ms, a.telemetry_ms
                    )
                }
                Downlink::Command(c) => {
                    let (action, ms) = match c.action {
                        CommandAction::SetHeartbeatInterval { ms } => (0, ms),
                        CommandAction::SetTelemetryInterval { ms } => (1, ms),
                        CommandAction::ResendState => (2, 0),
                        CommandAction::Reboot => (3, 0),
                    };
                    format!("command {} {action} {ms}", c.id)
                }
                Downlink::Error(e) => {
                    let (code, supported) = link_error_fields(e);
                    format!("error {code} {supported}")
                }
                Downlink::Refuse(r) => format!("refuse {}", r as u8),
            };
            format!("ok {address} {fields}")
        }
        Err(e) => {
            let label = match e {
                FrameError::TooLong { .. } => "frame_too_long",
                FrameError::Cobs => "cobs",
                FrameError::TooShort => "frame_too_short",
                FrameError::Crc => "crc_mismatch",
                FrameError::UnknownMessage { .. } => "unknown_message",
                FrameError::Malformed => "malformed",
                FrameError::Invalid(_) => "invalid",
                FrameError::Overflow => "frame_overflow",
                // Only a module's hello produces these; this decodes hub → module frames.
                FrameError::VersionMismatch { .. } | FrameError::InvalidHello(_) => "hello_only",
            };
            format!("err {label}")
        }
    }
}

/// Re-frames a raw message body with a valid CRC (so the damage reaches the parser).
fn frame_body(address: u8, body: &[u8]) -> Vec<u8> {
    let mut raw = vec![address];
    raw.extend_from_slice(body);
    raw.extend_from_slice(&crc::crc16(&raw).to_le_bytes());
    let mut out = vec![0u8; cobs::max_encoded_len(raw.len())];
    let n = cobs::encode(&raw, &mut out).expect("room");
    out.truncate(n);
    out
}

/// The raw message body (after the address, before the CRC) of a valid frame.
fn body_of(frame: &[u8]) -> Vec<u8> {
    let mut raw = frame.to_vec();
    let n = cobs::decode_in_place(&mut raw).expect("valid COBS");
    raw[1..n - 2].to_vec()
}

fn mutate_body(rng: &mut Rng, body: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(body.len().max(1) as u64) as usize;
        match rng.below(7) {
            0 if !body.is_empty() => body[at] = rng.byte(),
            1 if !body.is_empty() => body[at] ^= 1 << rng.below(8),
            2 => body.push(rng.byte()),
            3 if !body.is_empty() => {
                body.remove(at);
            }
            4 => body.truncate(at),
            5 => {
                // a tail of continuation bytes: overlong and overflowing varints
                body.truncate(at + 1);
                for _ in 0..1 + rng.below(8) {
                    let b = rng.byte();
                    body.push(if rng.below(3) == 0 { b } else { b | 0x80 });
                }
            }
            _ => {
                // a non-canonical but valid re-encoding of one byte's value: 0x05 -> 0x85 0x00
                if let Some(&b) = body.get(at)
                    && b < 0x80
                {
                    body[at] = b | 0x80;
                    body.insert(at + 1, 0);
                }
            }
        }
    }
}

fn mutate_wire(rng: &mut Rng, frame: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(frame.len().max(1) as u64) as usize;
        match rng.below(4) {
            0 if !frame.is_empty() => frame[at] ^= 1 << rng.below(8),
            1 if !frame.is_empty() => {
                frame.remove(at);
            }
            2 => frame.insert(at.min(frame.len()), rng.byte()),
            _ => frame.truncate(at),
        }
    }
}

/// The differential file `hardware/c/test_vectors.c` reads (format described there).
fn differential_cases() -> String {
    let mut rng = Rng(0x5EED_C0DE_1234_5678);
    let mut out = String::from("# written by tests/it/c_reference.rs\n");
    for _ in 0..4000 {
        let address = address(&mut rng);
        let (msg, fields) = uplink(&mut rng);
        let bytes = uplink_to_vec(address, &msg).expect("encodes");
        writeln!(out, "up {} {address} {fields}", hex(&bytes)).unwrap();
    }
    for i in 0..40_000u32 {
        let address = address(&mut rng);
        let msg = downlink(&mut rng);
        let wire = downlink_to_vec(address, &msg).expect("encodes");
        let mut frame = wire[..wire.len() - 1].to_vec();
        match i % 8 {
            0..=2 => {}
            3..=5 => {
                let mut body = body_of(&frame);
                mutate_body(&mut rng, &mut body);
                frame = frame_body(address, &body);
            }
            6 => mutate_wire(&mut rng, &mut frame),
            _ => {
                // random bytes of any length, past the limit now and then
                let len = if rng.below(10) == 0 {
                    1020 + rng.below(20)
                } else {
                    rng.below(40)
                };
                frame = (0..len)
                    .map(|_| if rng.below(8) == 0 { 0 } else { rng.byte() | 1 })
                    .collect();
            }
        }
        writeln!(out, "down {} {}", hex(&frame), rust_verdict(&frame)).unwrap();
    }
    out
}

#[test]
fn differential_cases_reach_every_verdict() {
    // Otherwise the comparison with C would prove less than it seems.
    let cases = differential_cases();
    for verdict in [
        "ok 0 accept",
        "ok 0 command",
        "ok 0 error",
        "ok 0 refuse",
        "err cobs",
        "err frame_too_short",
        "err frame_too_long",
        "err crc_mismatch",
        "err unknown_message",
        "err malformed",
        "err invalid",
    ] {
        let count = cases.matches(verdict).count();
        assert!(count >= 20, "only {count} cases of `{verdict}`");
    }
}
