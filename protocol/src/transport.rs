//! QUIC endpoints and connections tuned for Stratus.
//!
//! Sockets get 4 MiB UDP buffers (the kernel default drops packets under load),
//! flow-control windows suited to bulk Arrow data, and keep-alives so that a
//! silent peer is noticed within [`IDLE_TIMEOUT`].

use crate::pki::Role;
use crate::{tls, ProtocolError, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A connection with no packets for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive interval on every connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
const SOCKET_BUFFER: usize = 4 << 20;

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT.try_into().expect("idle timeout fits a VarInt"),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    t.max_concurrent_bidi_streams(crate::limits::max_streams_per_connection().into());
    // No Stratus stream is unidirectional: a peer may open none.
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}

fn udp_socket(bind: SocketAddr) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel may cap these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket
        .bind(&bind.into())
        .map_err(|e| ProtocolError::Address {
            address: bind.to_string(),
            what: format!("cannot bind UDP socket: {e}"),
        })?;
    Ok(socket.into())
}

/// Server settings for an endpoint that presents `credentials` and admits
/// peers whose certificates have one of the `accept` roles. Also what a
/// running endpoint is given on a certificate reload
/// (`quinn::Endpoint::set_server_config`: existing connections stay).
pub fn server_config(
    credentials: &tls::Credentials,
    accept: &[Role],
    deny: &tls::DenyList,
) -> Result<quinn::ServerConfig> {
    let crypto = tls::server_crypto(credentials, accept, deny)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// A QUIC server endpoint bound to `bind` with `config` ([`server_config`]).
pub fn server_endpoint(bind: SocketAddr, config: quinn::ServerConfig) -> Result<quinn::Endpoint> {
    let socket = udp_socket(bind)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(ProtocolError::Io)
}

/// Client settings that present `credentials` and accept a server
/// certificate of the CA with role `expect`.
pub fn client_config(
    credentials: &tls::Credentials,
    expect: Role,
    deny: &tls::DenyList,
) -> Result<quinn::ClientConfig> {
    let crypto = tls::client_crypto(credentials, expect, deny)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// A QUIC client endpoint (ephemeral port) dialing with `config`.
pub fn client_endpoint(config: quinn::ClientConfig) -> Result<quinn::Endpoint> {
    let socket = udp_socket("0.0.0.0:0".parse().expect("valid wildcard address"))?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Parse `quic://HOST:PORT` (or `HOST:PORT`) into host and port.
pub fn parse_address(address: &str) -> Result<(String, u16)> {
    let bad = |what: &str| ProtocolError::Address {
        address: address.to_string(),
        what: what.to_string(),
    };
    let rest = match address.split_once("://") {
        Some(("quic", rest)) => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "unsupported scheme '{scheme}://' (expected quic://HOST:PORT)"
            )))
        }
        None => address,
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected quic://HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| bad("port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    Ok((host.to_string(), port))
}

/// Connect to a scheduler at `quic://HOST:PORT`: its certificate must be
/// valid for HOST (a DNS name or IP address in its subject-alternative names).
pub async fn connect(endpoint: &quinn::Endpoint, address: &str) -> Result<quinn::Connection> {
    let (host, port) = parse_address(address)?;
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| ProtocolError::Address {
            address: address.to_string(),
            what: format!("cannot resolve: {e}"),
        })?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| ProtocolError::Address {
            address: address.to_string(),
            what: "no IPv4 address".into(),
        })?;
    let connecting = endpoint
        .connect(target, &host)
        .map_err(|e| ProtocolError::Connect {
            peer: address.to_string(),
            what: e.to_string(),
        })?;
    connecting.await.map_err(|e| ProtocolError::Connect {
        peer: address.to_string(),
        what: explain_handshake_failure(&e.to_string(), &host),
    })
}

/// Say what a TLS failure means for the user. A refusing server sends only
/// a TLS alert number (and rustls' reason), so name the likely cause and the
/// fix; other errors pass through unchanged.
pub fn explain_handshake_failure(error: &str, host: &str) -> String {
    let alert = |n: u32| error.contains(&format!("handshake failed: error {n}"));
    let hint = if alert(116) || error.contains("CertificateRequired") {
        "the scheduler requires a client certificate: pass --tls-cert and --tls-key (or a scheduler file that carries them)"
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        return format!(
            "{error}: the scheduler's certificate is not valid for '{host}'; issue it with --host {host} or dial a name it carries"
        );
    } else if error.contains("Expired") || alert(45) {
        "a certificate has expired; issue a new one (stratus certs issue ... --days N)"
    } else if error.contains("aborted by peer")
        && [40, 42, 44, 46, 48, 49, 51, 80].into_iter().any(alert)
    {
        "the scheduler refused our certificate: it must be issued by the cluster's CA (stratus certs issue DIR --role ...), unexpired, and not on its deny-list"
    } else if error.contains("UnknownIssuer") || error.contains("BadSignature") {
        "the scheduler's certificate is not issued by the CA we trust (--tls-ca)"
    } else {
        return error.to_string();
    };
    format!("{error}: {hint}")
}

#[cfg(test)]
mod tests {
    use super::parse_address;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("quic://10.1.0.8:8786").unwrap(),
            ("10.1.0.8".to_string(), 8786)
        );
        assert_eq!(
            parse_address("localhost:1").unwrap(),
            ("localhost".to_string(), 1)
        );
        assert!(parse_address("tcp://x:1").is_err());
        assert!(parse_address("quic://x").is_err());
    }
}
