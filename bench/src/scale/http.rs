//! Just enough HTTP/1.1 to register modules through the hub's API: one request per connection
//! (`Connection: close`), a JSON body, the session cookie.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `POST path` with a JSON body; returns the status code and the response body.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    cookie: &str,
    body: &str,
) -> Result<(u16, String)> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Cookie: {cookie}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .with_context(|| format!("POST {path} timed out"))?
        .with_context(|| format!("POST {path}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("POST {path}: no HTTP response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("POST {path}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}
