//! One serial port's task: open it, read frames, write replies; when it is missing or
//! disappears (read error, end of file, USB unplugged), end its sessions at once and open it
//! again with [`Backoff`], without disturbing the rest of the hub.
//!
//! Every write starts with a delimiter (`0x00`, or `\n` on a JSON-lines port): a write that
//! timed out may have left half a frame on the line, and the module's receiver must not glue
//! it to the next one (PROTOCOL.md §1: empty frames are ignored).
//!
//! Logging: the first failure is a warning, the recovery is info, the retries in between are
//! debug only.

use std::{sync::Arc, time::Duration};

use mc_protocol::link::{
    ADDRESS_POINT_TO_POINT, Accumulated, DELIMITER, Downlink, FrameAccumulator, FrameError,
    decode_uplink, downlink_to_vec,
    json::{self, JsonDownlink},
};
use tokio::{
    io::{AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::mpsc,
    time::Instant,
};
use tokio_serial::{DataBits, FlowControl, Parity, SerialPortBuilderExt, SerialStream, StopBits};
use tokio_util::sync::CancellationToken;

use super::{
    PortRequest, REQUEST_QUEUE, SerialContext,
    backoff::Backoff,
    link::{Inbound, LinkSessions},
};
use crate::{
    config::{Framing, SerialPortSpec},
    metrics::SerialPortMetrics,
};

/// A write the port does not take within this long is dropped (a stuck line must not stall
/// the reading of frames).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// A port that stayed open this long was working: its next failure starts the backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(5);

/// Why [`serve`] returned.
enum Ended {
    Shutdown,
    Lost(String),
}

/// Serves the port `spec` until `shutdown`.
pub async fn run(spec: SerialPortSpec, ctx: SerialContext, shutdown: CancellationToken) {
    let port: Arc<str> = spec.path.to_string_lossy().into();
    let counters = ctx.metrics.serial_port(&port);
    let (requests_tx, mut requests) = mpsc::channel(REQUEST_QUEUE);
    let mut sessions = LinkSessions::new(port.clone(), ctx, counters.clone(), requests_tx);
    let mut frames = Box::new(FrameAccumulator::with_delimiter(delimiter(spec.framing)));
    let mut backoff = Backoff::default();
    // Set from a failure until the next successful open, which is logged as a recovery.
    let mut failing = false;
    let mut opened_before = false;
    loop {
        match open(&spec) {
            Ok(mut stream) => {
                counters
                    .open
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                if opened_before {
                    counters.reopens.inc();
                }
                if failing {
                    tracing::info!(%port, baud = spec.baud, framing = ?spec.framing, "serial port is back");
                } else {
                    tracing::info!(%port, baud = spec.baud, framing = ?spec.framing, "serial port open");
                }
                opened_before = true;
                let opened_at = Instant::now();
                sessions.port_opened();
                let ended = serve(
                    &mut stream,
                    &port,
                    spec.framing,
                    &mut sessions,
                    &mut frames,
                    &mut requests,
                    &shutdown,
                )
                .await;
                counters
                    .open
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                drop(stream);
                sessions.port_lost().await;
                let partial = frames.reset();
                if partial > 0 {
                    counters.partial_frames_dropped.inc();
                    tracing::debug!(%port, bytes = partial, "partial frame dropped");
                }
                match ended {
                    Ended::Shutdown => return,
                    Ended::Lost(error) => {
                        tracing::warn!(%port, %error, "serial port lost: its modules are offline; reopening");
                        failing = true;
                    }
                }
                if opened_at.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
            }
            Err(error) => {
                counters.open_failures.inc();
                if failing {
                    tracing::debug!(%port, %error, "serial port still unavailable");
                } else {
                    tracing::warn!(%port, %error, "cannot open serial port: retrying in the background");
                    failing = true;
                }
            }
        }
        let retry_at = Instant::now() + backoff.next_delay();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(retry_at) => break,
                Some(request) = requests.recv() => sessions.on_request(request),
            }
        }
    }
}

/// Opens the port: 8N1, no flow control, exclusive (another process opening it would steal
/// bytes). A symlink is followed anew at each open.
fn open(spec: &SerialPortSpec) -> Result<SerialStream, tokio_serial::Error> {
    tokio_serial::new(spec.path.to_string_lossy(), spec.baud)
        .data_bits(DataBits::Eight)
        .parity(Parity::None)
        .stop_bits(StopBits::One)
        .flow_control(FlowControl::None)
        .open_native_async()
}

/// What woke the port task.
enum Step {
    Read(std::io::Result<usize>),
    Request(PortRequest),
    Closed(u8, u64),
    Timer,
}

/// Reads and answers frames until the port fails or the hub stops.
async fn serve(
    stream: &mut SerialStream,
    port: &str,
    framing: Framing,
    sessions: &mut LinkSessions,
    frames: &mut FrameAccumulator,
    requests: &mut mpsc::Receiver<PortRequest>,
    shutdown: &CancellationToken,
) -> Ended {
    let mut buf = [0u8; 1024];
    // What the sessions have to say at once (that the port was opened).
    if let Err(e) = write_replies(stream, port, framing, sessions).await {
        return Ended::Lost(e.to_string());
    }
    loop {
        let wake_at = sessions.next_timer();
        let step = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            read = stream.read(&mut buf) => Step::Read(read),
            Some(request) = requests.recv() => Step::Request(request),
            (address, session) = sessions.next_close() => Step::Closed(address, session),
            _ = LinkSessions::timer(wake_at) => Step::Timer,
        };
        match step {
            Step::Read(Ok(0)) => return Ended::Lost("end of file (device gone)".into()),
            Step::Read(Err(e)) => return Ended::Lost(e.to_string()),
            Step::Read(Ok(n)) => {
                sessions.counters().bytes_in.add(n as u64);
                for &byte in &buf[..n] {
                    let frame = match frames.push(byte) {
                        None => continue,
                        Some(Accumulated::Frame(frame)) => decode(framing, frame),
                        Some(Accumulated::Overflow { discarded }) => {
                            Err(FrameError::TooLong { len: discarded })
                        }
                    };
                    sessions.on_frame(frame).await;
                }
            }
            Step::Request(request) => sessions.on_request(request),
            Step::Closed(address, session) => sessions.on_closed(address, session).await,
            Step::Timer => sessions.on_timer().await,
        }
        if let Err(e) = write_replies(stream, port, framing, sessions).await {
            return Ended::Lost(e.to_string());
        }
    }
}

/// Writes the outbox in one go, after a delimiter. A write that times out is dropped
/// (counted); whatever part of it reached the line is cut off by the next write's leading
/// delimiter.
async fn write_replies<W: AsyncWrite + Unpin>(
    stream: &mut W,
    port: &str,
    framing: Framing,
    sessions: &mut LinkSessions,
) -> std::io::Result<()> {
    let outbox = sessions.take_outbox();
    if outbox.is_empty() {
        return Ok(());
    }
    let counters = sessions.counters().clone();
    write_batch(stream, port, framing, &outbox, &counters).await
}

/// Writes `outbox` as one batch (see [`write_replies`]).
async fn write_batch<W: AsyncWrite + Unpin>(
    stream: &mut W,
    port: &str,
    framing: Framing,
    outbox: &[(u8, Downlink)],
    counters: &SerialPortMetrics,
) -> std::io::Result<()> {
    let (bytes, frames) = batch(port, framing, outbox);
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
        Ok(Ok(())) => {
            counters.frames_out.add(frames);
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            counters.write_timeouts.inc();
            tracing::debug!(%port, frames, "the port did not take our replies in time: dropped");
            Ok(())
        }
    }
}

/// The bytes of one write: a delimiter, then every reply that encodes; and how many frames.
fn batch(port: &str, framing: Framing, outbox: &[(u8, Downlink)]) -> (Vec<u8>, u64) {
    let mut bytes = Vec::with_capacity(1 + outbox.len() * 16);
    bytes.push(delimiter(framing));
    let mut frames = 0;
    for (address, message) in outbox {
        match encode(framing, *address, message) {
            Ok(frame) => {
                bytes.extend_from_slice(&frame);
                frames += 1;
            }
            Err(e) => tracing::error!(%port, error = %e, ?message, "cannot encode a reply"),
        }
    }
    (bytes, frames)
}

/// Where frames end on the line.
fn delimiter(framing: Framing) -> u8 {
    match framing {
        Framing::Binary => DELIMITER,
        Framing::JsonLines => b'\n',
    }
}

/// Decodes one frame (a JSON line has no address: it is the point-to-point address 0).
fn decode(framing: Framing, frame: &mut [u8]) -> Result<(u8, Inbound), FrameError> {
    match framing {
        Framing::Binary => decode_uplink(frame).map(|(address, m)| (address, m.into())),
        Framing::JsonLines => {
            json::decode_uplink_line(frame).map(|m| (ADDRESS_POINT_TO_POINT, m.into()))
        }
    }
}

/// Encodes one reply for the line.
fn encode(framing: Framing, address: u8, message: &Downlink) -> Result<Vec<u8>, FrameError> {
    match framing {
        Framing::Binary => downlink_to_vec(address, message),
        Framing::JsonLines => Ok(json::downlink_line(&match message.clone() {
            Downlink::Accept(a) => JsonDownlink::Accept(a),
            Downlink::Command(c) => JsonDownlink::Command(c),
            Downlink::Error(e) => JsonDownlink::Error(e),
            Downlink::Refuse(r) => JsonDownlink::Refuse(r),
        })),
    }
}

#[cfg(test)]
mod tests {
    use mc_protocol::{
        Command, CommandAction,
        link::{LinkError, RefuseReason, decode_downlink},
    };

    use super::*;
    use crate::metrics::Metrics;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_timed_out_does_not_spoil_the_next_frame() {
        let counters = Metrics::default().serial_port("/dev/ttyT");
        // A line that takes 8 bytes, then nothing until the module reads.
        let (mut hub_end, mut module_end) = tokio::io::duplex(8);
        let command = Downlink::Command(Command {
            id: 7,
            action: CommandAction::SetHeartbeatInterval { ms: 60_000 },
        });
        write_batch(
            &mut hub_end,
            "t",
            Framing::Binary,
            &[(0, command)],
            &counters,
        )
        .await
        .unwrap();
        assert_eq!(
            counters.write_timeouts.get(),
            1,
            "half a frame is on the line"
        );

        let module = tokio::spawn(async move {
            let mut line = Vec::new();
            module_end.read_to_end(&mut line).await.unwrap();
            line
        });
        let refuse = Downlink::Refuse(RefuseReason::HandshakeRequired);
        write_batch(
            &mut hub_end,
            "t",
            Framing::Binary,
            &[(0, refuse.clone())],
            &counters,
        )
        .await
        .unwrap();
        drop(hub_end);
        let line = module.await.unwrap();

        let mut frames = FrameAccumulator::new();
        let mut decoded = Vec::new();
        for byte in line {
            if let Some(Accumulated::Frame(frame)) = frames.push(byte) {
                decoded.push(decode_downlink(frame));
            }
        }
        assert_eq!(decoded.len(), 2, "{decoded:?}");
        assert!(decoded[0].is_err(), "the cut frame is only a damaged frame");
        assert_eq!(decoded[1], Ok((0, refuse)));
        assert_eq!(counters.frames_out.get(), 1);
    }

    #[test]
    fn every_batch_starts_with_a_delimiter() {
        let outbox = [(0, Downlink::Refuse(RefuseReason::HandshakeRequired))];
        let (bytes, frames) = batch("t", Framing::Binary, &outbox);
        assert_eq!(frames, 1);
        assert_eq!(bytes[0], DELIMITER);
        assert_eq!(bytes[1..], downlink_to_vec(0, &outbox[0].1).unwrap());
        let (bytes, _) = batch("t", Framing::JsonLines, &outbox);
        assert_eq!(bytes, b"\n{\"refuse\":\"handshakeRequired\"}\n");
    }

    #[test]
    fn json_lines_have_no_address_and_are_answered_in_json() {
        let mut line = br#"{"heartbeat":{"seq":7,"uptimeMs":1234}}"#.to_vec();
        let (address, message) = decode(Framing::JsonLines, &mut line).unwrap();
        assert_eq!(address, ADDRESS_POINT_TO_POINT);
        assert!(matches!(message, Inbound::Heartbeat(h) if h.seq == 7));
        assert_eq!(
            decode(Framing::JsonLines, &mut b"\x13\x37".to_vec()),
            Err(FrameError::Crc)
        );
        let refuse = Downlink::Refuse(RefuseReason::HandshakeRequired);
        assert_eq!(
            encode(Framing::JsonLines, 0, &refuse).unwrap(),
            b"{\"refuse\":\"handshakeRequired\"}\n"
        );
        let error = Downlink::Error(LinkError::CrcMismatch);
        assert_eq!(
            encode(Framing::Binary, 0, &error).unwrap(),
            downlink_to_vec(0, &error).unwrap()
        );
    }
}
