//! The module's end of a serial line, opened: a device node, or the master of a pty the
//! simulator made (`pty`). Both are a tokio-serial stream; [`Line::poll_transfer`] writes
//! and reads it from one future, so the serial task waits for bytes and for room on the line at
//! once without splitting the stream (a pty's master must stay whole for
//! [`Line::probe`]).

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_serial::{DataBits, FlowControl, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use crate::pty;

/// An open line.
#[derive(Debug)]
pub(crate) struct Line {
    io: LineIo,
    /// For a pty: its slave, `/dev/pts/N`. `None` for a device.
    pty_slave: Option<PathBuf>,
}

/// What a line is made of.
#[derive(Debug)]
enum LineIo {
    Serial(SerialStream),
    /// In memory, for tests of the task under paused time.
    #[cfg(test)]
    Memory(tokio::io::DuplexStream),
}

/// What [`Line::poll_transfer`] did.
#[derive(Debug)]
pub(crate) enum Transfer {
    /// Bytes read into the buffer (0: end of file).
    Read(io::Result<usize>),
    /// Bytes of the output written.
    Wrote(io::Result<usize>),
}

impl Line {
    /// Opens a serial device at `baud`, 8N1, no flow control, exclusively (another process
    /// reading the same port would steal the hub's bytes). A symlink is followed anew at each
    /// open. Must run within a Tokio runtime.
    pub fn open_device(path: &Path, baud: u32) -> Result<Self, tokio_serial::Error> {
        let stream = tokio_serial::new(path.to_string_lossy(), baud)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .open_native_async()?;
        Ok(Self {
            io: LineIo::Serial(stream),
            pty_slave: None,
        })
    }

    /// Opens a new pty pair and keeps its master. Must run within a Tokio runtime.
    pub fn open_pty() -> Result<Self, tokio_serial::Error> {
        let (master, slave) = pty::open()?;
        Ok(Self {
            io: LineIo::Serial(master),
            pty_slave: Some(slave),
        })
    }

    /// An in-memory line, for tests of the task logic under paused time.
    #[cfg(test)]
    pub fn memory(stream: tokio::io::DuplexStream) -> Self {
        Self {
            io: LineIo::Memory(stream),
            pty_slave: None,
        }
    }

    /// For a pty: its slave.
    pub fn pty_slave(&self) -> Option<&Path> {
        self.pty_slave.as_deref()
    }

    /// For a pty: whether the hub has the slave open ([`pty::probe`]).
    pub fn probe(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.io {
            LineIo::Serial(stream) => pty::probe(stream, buf),
            #[cfg(test)]
            LineIo::Memory(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Writes some of `out` (if not empty) or reads into `buf`, whichever the line allows
    /// first. Cancel-safe: nothing is written or read unless it returns `Ready`.
    pub fn poll_transfer(
        &mut self,
        cx: &mut Context<'_>,
        out: &[u8],
        buf: &mut [u8],
    ) -> Poll<Transfer> {
        if !out.is_empty()
            && let Poll::Ready(written) = Pin::new(&mut self.io).poll_write(cx, out)
        {
            return Poll::Ready(Transfer::Wrote(written));
        }
        let mut read = ReadBuf::new(buf);
        Pin::new(&mut self.io)
            .poll_read(cx, &mut read)
            .map(|result| Transfer::Read(result.map(|()| read.filled().len())))
    }
}

impl AsyncRead for LineIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Serial(io) => Pin::new(io).poll_read(cx, buf),
            #[cfg(test)]
            Self::Memory(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LineIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Serial(io) => Pin::new(io).poll_write(cx, buf),
            #[cfg(test)]
            Self::Memory(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Serial(io) => Pin::new(io).poll_flush(cx),
            #[cfg(test)]
            Self::Memory(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Serial(io) => Pin::new(io).poll_shutdown(cx),
            #[cfg(test)]
            Self::Memory(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
