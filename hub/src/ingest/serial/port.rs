//! One serial port's task: open it, read frames, write replies; when it is missing or
//! disappears (read error, end of file, USB unplugged), end its sessions at once and open it
//! again with [`Backoff`], without disturbing the rest of the hub.
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
    io::{AsyncReadExt, AsyncWriteExt},
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
use crate::config::{Framing, SerialPortSpec};

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
    let delimiter = match spec.framing {
        Framing::Binary => DELIMITER,
        Framing::JsonLines => b'\n',
    };
    let mut frames = Box::new(FrameAccumulator::with_delimiter(delimiter));
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

/// Writes the outbox in one go. A write that times out is dropped (counted); the module's
/// receiver resynchronises at the next delimiter.
async fn write_replies(
    stream: &mut SerialStream,
    port: &str,
    framing: Framing,
    sessions: &mut LinkSessions,
) -> std::io::Result<()> {
    let outbox = sessions.take_outbox();
    if outbox.is_empty() {
        return Ok(());
    }
    let counters = sessions.counters().clone();
    let mut bytes = Vec::with_capacity(outbox.len() * 16);
    let mut frames = 0;
    for (address, message) in &outbox {
        match encode(framing, *address, message) {
            Ok(frame) => {
                bytes.extend_from_slice(&frame);
                frames += 1;
            }
            Err(e) => tracing::error!(%port, error = %e, ?message, "cannot encode a reply"),
        }
    }
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
    use mc_protocol::link::{LinkError, RefuseReason};

    use super::*;

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
