//! Time and bytes: the two things a link driver needs from a board, as traits.
//!
//! [`crate::ModuleCore`] itself takes `now` as an argument and hands back messages, so it needs
//! neither. A link driver (the serial link's framing and handshake, written on top of this
//! crate) reads a [`Clock`] to feed the core its `now`, and moves frames over a [`Transport`]. A
//! board implements them over its timer and UART or USB CDC; the simulator over
//! `std::time::Instant` and a pty; tests over a counter and a buffer.
//!
//! Both are non-blocking on purpose: a firmware main loop polls them between other work (and
//! sleeps until the next interrupt or [`crate::ModuleCore::poll_timeout`]), so no call may wait
//! for the line.

use core::time::Duration;

/// Monotonic time since the board (or process) started.
///
/// The `now` every [`crate::ModuleCore`] input takes. It must never go backwards; it need not
/// be wall-clock time (the core keeps its own boot instant for uptime).
pub trait Clock {
    /// Time since start.
    fn now(&self) -> Duration;
}

/// A byte stream to the hub (UART, USB CDC, a pty in the simulator). Non-blocking.
///
/// No framing: frame boundaries are the link driver's business (bytes may arrive in any
/// split), so a transport is only a pipe.
pub trait Transport {
    /// What goes wrong on the line (overrun, framing error, a closed pty).
    type Error: core::fmt::Debug;

    /// Copies bytes already received into `buf`; Ok(0) when none are waiting.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;

    /// Queues or writes all of `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use super::*;

    /// A clock the test moves by hand.
    struct ManualClock(Cell<Duration>);

    impl Clock for ManualClock {
        fn now(&self) -> Duration {
            self.0.get()
        }
    }

    /// A transport that reads back what was written, through a fixed buffer (no allocator,
    /// like a board's UART ring buffer).
    struct Loopback {
        buf: [u8; 8],
        len: usize,
    }

    #[derive(Debug, PartialEq)]
    struct Overrun;

    impl Transport for Loopback {
        type Error = Overrun;

        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Overrun> {
            let n = buf.len().min(self.len);
            buf[..n].copy_from_slice(&self.buf[..n]);
            self.buf.copy_within(n..self.len, 0);
            self.len -= n;
            Ok(n)
        }

        fn write(&mut self, bytes: &[u8]) -> Result<(), Overrun> {
            let end = self.len + bytes.len();
            if end > self.buf.len() {
                return Err(Overrun);
            }
            self.buf[self.len..end].copy_from_slice(bytes);
            self.len = end;
            Ok(())
        }
    }

    /// What a link driver does: generic over both traits.
    fn echo_once<T: Transport>(
        transport: &mut T,
        clock: &impl Clock,
    ) -> Result<Duration, T::Error> {
        let mut buf = [0u8; 4];
        let n = transport.read(&mut buf)?;
        transport.write(&buf[..n])?;
        Ok(clock.now())
    }

    #[test]
    fn clock_is_what_the_board_says() {
        let clock = ManualClock(Cell::new(Duration::ZERO));
        assert_eq!(clock.now(), Duration::ZERO);
        clock.0.set(Duration::from_millis(1_500));
        assert_eq!(clock.now(), Duration::from_millis(1_500));
    }

    #[test]
    fn transport_reads_what_is_waiting_and_zero_when_nothing_is() {
        let mut line = Loopback {
            buf: [0; 8],
            len: 0,
        };
        let mut buf = [0u8; 4];
        assert_eq!(line.read(&mut buf), Ok(0));
        line.write(b"hello").unwrap();
        assert_eq!(
            line.read(&mut buf),
            Ok(4),
            "partial read: the rest stays waiting"
        );
        assert_eq!(&buf, b"hell");
        assert_eq!(line.read(&mut buf), Ok(1));
        assert_eq!(buf[0], b'o');
        assert_eq!(line.write(b"123456789"), Err(Overrun));
    }

    #[test]
    fn a_driver_is_generic_over_both() {
        let clock = ManualClock(Cell::new(Duration::from_secs(3)));
        let mut line = Loopback {
            buf: [0; 8],
            len: 0,
        };
        line.write(b"ab").unwrap();
        assert_eq!(echo_once(&mut line, &clock), Ok(Duration::from_secs(3)));
        let mut buf = [0u8; 4];
        assert_eq!(line.read(&mut buf), Ok(2));
        assert_eq!(&buf[..2], b"ab");
    }
}
