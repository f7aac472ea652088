//! systemd's readiness protocol (`Type=notify`), without a crate: when
//! systemd starts a service it sets `NOTIFY_SOCKET` to a datagram socket
//! (a path, or `@name` in the abstract namespace), and the service sends
//! newline-separated `KEY=VALUE` lines to it: `READY=1` once it serves,
//! `STOPPING=1` when it begins to stop. Outside systemd (no variable) this
//! does nothing.

use std::io;

/// Send `state` (e.g. `"READY=1"`) to systemd's notification socket.
/// `Ok(false)` when there is none (not started by systemd with
/// `Type=notify`, or `NotifyAccess=` keeps us out).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    send(&path, state)?;
    Ok(true)
}

/// [`notify`], logging a failure instead of returning it: a supervisor
/// that cannot be told is no reason to stop serving.
pub fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        eprintln!("cannot notify systemd ({state}): {e}");
    }
}

#[cfg(target_os = "linux")]
fn send(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let address = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        Some(b'/') => SocketAddr::from_pathname(path)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither a path nor an @abstract name",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &address)?;
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send(_path: &std::ffi::OsStr, _state: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sd_notify is implemented for Linux only",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn sends_a_datagram_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("stratus-sd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_a_datagram_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("stratus-sd-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_relative_path_is_refused() {
        assert!(send(std::ffi::OsStr::new("relative.sock"), "READY=1").is_err());
    }
}
