//! Pseudo-terminals: a serial line without hardware, for `firmware-sim --pty LINK_PATH`.
//!
//! The simulator opens a pty pair and keeps the **master**: it plays the module's UART. The
//! **slave** `/dev/pts/N` is the hub's serial port; a symlink at `LINK_PATH` points at it, as
//! udev's `/dev/serial/by-id/...` links point at `/dev/ttyUSBn`, so the hub's configuration
//! names a stable path while [`crate::Fault::Replug`] moves the line to a new `/dev/pts/M`.
//! The slave is left raw (no echo, no line editing, no CR/LF translation), so bytes pass
//! untouched even to a program that does not configure the port, and closed: only the hub
//! holds it.
//!
//! How Linux ptys behave, and what the serial task makes of it (checked on this machine, and
//! by the tests below):
//! - reading the master while nobody has the slave open fails with `EIO` ([`is_hangup`]);
//!   this means "the hub is not listening", not "the line is broken";
//! - bytes written to the master meanwhile wait for the next opener of the slave, so the task
//!   writes nothing while the hub is away;
//! - once the hub opens the slave, a read of the master says `WouldBlock` instead ([`probe`]);
//! - closing the master hangs the slave up: the hub's reads return end of file, and the
//!   `/dev/pts/N` node disappears.
//!
//! The pair comes from `tokio_serial::SerialStream::pair()`: the stack's serial crate (the hub
//! opens ports with it), which makes the pair with `openpty`'s steps, sets the slave raw and
//! hands the master back as a non-blocking Tokio stream — so this crate needs neither `unsafe`
//! (Tokio 1.54 made registering a raw fd with its reactor an `unsafe` call) nor a second
//! crate of POSIX wrappers. One thing it does not do is mark the master close-on-exec; the
//! simulator starts no child processes that could inherit it.

use std::{
    io,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use tokio_serial::{SerialPort, SerialStream};

/// Opens a new pty pair: its master, and the path of its slave (`/dev/pts/N`), left raw and
/// closed. Must run within a Tokio runtime.
pub(crate) fn open() -> Result<(SerialStream, PathBuf), tokio_serial::Error> {
    let (master, slave) = SerialStream::pair()?;
    let path = slave.name().ok_or_else(|| {
        tokio_serial::Error::new(
            tokio_serial::ErrorKind::Unknown,
            "the pty slave has no name",
        )
    })?;
    drop(slave);
    Ok((master, PathBuf::from(path)))
}

/// One non-blocking read of a pty master, outside the reactor's readiness tracking: `Ok(n)`
/// bytes from the hub, `WouldBlock` when the hub has the slave open and sent nothing, `EIO`
/// ([`is_hangup`]) when nobody has the slave open.
pub(crate) fn probe(master: &mut SerialStream, buf: &mut [u8]) -> io::Result<usize> {
    master.try_read(buf)
}

/// True for the error a pty master reads while nobody has the slave open.
pub(crate) fn is_hangup(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EIO)
}

/// True when `path` exists and is something other than a symlink (which the simulator must
/// not replace).
pub(crate) fn occupied(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_symlink())
}

/// Points the symlink `link` at `target`, atomically: a new symlink beside it, renamed over it,
/// so the hub never finds the path missing or half-made. Replaces an older symlink (a stale
/// one from a crashed run, or this simulator's previous pty); refuses anything else.
pub(crate) fn point_link(link: &Path, target: &Path) -> io::Result<()> {
    /// Tells concurrent replacements (several simulations in one test process) apart.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if occupied(link) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a symlink",
        ));
    }
    let name = link.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the link path has no file name",
        )
    })?;
    let tmp = link.with_file_name(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    symlink(target, &tmp)?;
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes the symlink `link` if it still points at `target` (another simulator may have
/// taken the name since).
pub(crate) fn remove_link(link: &Path, target: &Path) {
    if std::fs::read_link(link).is_ok_and(|t| t == target)
        && let Err(e) = std::fs::remove_file(link)
    {
        tracing::warn!(link = %link.display(), "cannot remove the symlink: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[tokio::test]
    async fn the_master_hangs_up_until_the_slave_opens_and_bytes_pass_raw() {
        let (mut master, slave) = open().unwrap();
        assert!(slave.starts_with("/dev/pts"), "{}", slave.display());
        let mut buf = [0u8; 16];
        let err = probe(&mut master, &mut buf).unwrap_err();
        assert!(is_hangup(&err), "nobody has the slave open: {err}");

        let mut hub = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slave)
            .unwrap();
        let err = probe(&mut master, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "the hub is there");
        // Raw: a CR, a NUL and a Ctrl-C reach the other side unchanged, and nothing echoes.
        hub.write_all(b"\r\n\x00\x03").unwrap();
        let mut got: Vec<u8> = Vec::new();
        while got.len() < 4 {
            match probe(&mut master, &mut buf) {
                Ok(n) => got.extend(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"\r\n\x00\x03");
        drop(hub);
        assert!(is_hangup(&probe(&mut master, &mut buf).unwrap_err()));
        drop(master);
        assert!(!slave.exists(), "closing the master removes the slave");
    }

    #[test]
    fn links_are_replaced_atomically_and_removed_only_when_ours() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("tty");
        point_link(&link, Path::new("/dev/pts/1")).unwrap();
        point_link(&link, Path::new("/dev/pts/2")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/dev/pts/2"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
        remove_link(&link, Path::new("/dev/pts/1"));
        assert!(link.symlink_metadata().is_ok(), "not ours any more: kept");
        remove_link(&link, Path::new("/dev/pts/2"));
        assert!(link.symlink_metadata().is_err());

        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(occupied(&file));
        let err = point_link(&file, Path::new("/dev/pts/3")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }
}
