//! QUIC endpoints and connections tuned for Stratus.
//!
//! Sockets get 4 MiB UDP buffers (the kernel default drops packets under load),
//! flow-control windows suited to bulk Arrow data, and keep-alives so that a
//! silent peer is noticed within [`IDLE_TIMEOUT`].

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

/// A QUIC server endpoint bound to `bind`, presenting `pair`.
pub fn server_endpoint(bind: SocketAddr, pair: &tls::CertifiedKeyPem) -> Result<quinn::Endpoint> {
    let crypto = tls::server_crypto(pair)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    let socket = udp_socket(bind)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(ProtocolError::Io)
}

/// Client settings that trust exactly the certificates in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<quinn::ClientConfig> {
    let crypto = tls::client_crypto(ca_pem)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// A QUIC client endpoint (ephemeral port) that trusts `ca_pem`.
pub fn client_endpoint(ca_pem: &str) -> Result<quinn::Endpoint> {
    let config = client_config(ca_pem)?;
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

/// Connect to a scheduler at `quic://HOST:PORT`, verifying its certificate.
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
    let connecting =
        endpoint
            .connect(target, tls::SERVER_NAME)
            .map_err(|e| ProtocolError::Connect {
                peer: address.to_string(),
                what: e.to_string(),
            })?;
    connecting.await.map_err(|e| ProtocolError::Connect {
        peer: address.to_string(),
        what: e.to_string(),
    })
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
