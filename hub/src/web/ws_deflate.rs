//! permessage-deflate (RFC 7692) for the realtime channel.
//!
//! socketioxide speaks WebSocket through tungstenite, which has no compression extension. This
//! layer sits directly outside the Socket.IO layer (inside the origin check) and takes over the
//! WebSocket upgrades to `/socket.io/` that offer `permessage-deflate`:
//!
//! ```text
//! browser ──TCP, deflate──▶ yawc WebSocket ─┐ bridge task: one message in, one message out,
//!                                           │ flushed each time
//!   socketioxide ◀── tungstenite client ◀───┘ over an in-process duplex pipe served by hyper
//! ```
//!
//! The inner handshake carries the original path, query and headers (Cookie, Origin, ...) and
//! the request's extensions (peer address), so Socket.IO sees the same request it would have
//! seen directly and authenticates it the same way. The inner handshake runs before the client
//! gets its `101`, so a refusal there reaches the client as the same HTTP status (and the same
//! body when it came whole with the head, else an empty one). Upgrades without the offer,
//! polling, and everything else go straight to the inner service; so does every upgrade when
//! the layer is switched off (`[realtime] ws-deflate = false`): nothing is negotiated then.
//!
//! Limits: incoming messages are capped at `max_message` (the same cap socketioxide applies),
//! on the decompressed size, while inflating — a small frame that inflates past the cap closes
//! that connection with 1009 before the memory is spent. TCP_NODELAY is set on the accepted
//! socket by the listener (`lib.rs`); the duplex pipe has no Nagle.
//!
//! Every connection ends with both sides closed: a close from either side is forwarded to the
//! other and the close handshake is given [`CLOSE_WAIT`] to finish; an error on either side
//! closes the other. A client that stops reading blocks its own bridge only up to
//! [`SEND_TIMEOUT`] per message, then it is dropped. Logs about a connection carry the client's
//! address (`peer`) when the listener recorded it (`ConnectInfo`).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    http::{HeaderMap, HeaderName, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message, Utf8Bytes,
        client::IntoClientRequest,
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode as TungCode},
    },
};
use tower::{Layer, Service, ServiceExt};
use yawc::{CompressionLevel, DeflateOptions, Frame, OpCode, Options, close::CloseCode};

/// How long the in-process handshake with socketioxide may take (it never should).
const INNER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one message may wait for a client that does not read before the client is dropped
/// (longer than Engine.IO's ping interval + timeout, so a live client is never cut).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long each side gets to answer a close frame.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Buffer of each direction of the in-process pipe.
const PIPE_BUFFER: usize = 64 * 1024;
/// Read buffer of the in-process tungstenite client (the same size socketioxide reads with).
const INNER_READ_BUFFER: usize = 4 * 1024;
/// Messages shorter than this go uncompressed (Engine.IO pings are one byte; deflate framing
/// would make them longer).
const COMPRESSION_THRESHOLD: usize = 32;

/// Adds permessage-deflate in front of the Socket.IO service it wraps.
#[derive(Debug, Clone)]
pub struct WsDeflateLayer {
    /// Largest incoming message, decompressed (`config.realtime.max_message`).
    max_message: usize,
    /// Off: every request goes straight to the inner service (`config.realtime.ws_deflate`).
    enabled: bool,
}

impl WsDeflateLayer {
    /// `max_message`: the same cap socketioxide applies to WebSocket messages. `enabled`:
    /// whether offers are taken at all (each compressed socket holds ~285 KiB of deflate
    /// state); when `false`, deflate offers get the direct path and negotiate nothing.
    pub fn new(max_message: usize, enabled: bool) -> Self {
        Self {
            max_message,
            enabled,
        }
    }

    /// The client side of the compressed connection: fast deflate (per-message CPU matters
    /// more than the last percent: each socket compresses every event separately), context
    /// takeover (repeated keys in consecutive telemetry events are what compresses), and the
    /// inbound cap. yawc's limits are exclusive, socketioxide's inclusive: hence `+ 1`.
    fn options(&self) -> Options {
        Options {
            compression: Some(DeflateOptions {
                level: CompressionLevel::fast(),
                compression_threshold: COMPRESSION_THRESHOLD,
                ..DeflateOptions::default()
            }),
            ..Options::default()
        }
        .with_max_payload_read(self.max_message.saturating_add(1))
        .with_max_read_buffer(self.max_message.saturating_add(1))
    }
}

impl<S> Layer<S> for WsDeflateLayer {
    type Service = WsDeflate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WsDeflate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`WsDeflateLayer`].
#[derive(Debug, Clone)]
pub struct WsDeflate<S> {
    /// The Socket.IO service (and everything under it).
    inner: S,
    /// Settings.
    layer: WsDeflateLayer,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for WsDeflate<S>
where
    S: Service<Request, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Response: IntoResponse + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !self.layer.enabled
            || !offers_deflate(request.method(), request.uri().path(), request.headers())
        {
            let future = self.inner.call(request);
            return Box::pin(async move { future.await.map(IntoResponse::into_response) });
        }
        // The ready clone is the one to use (tower's clone-and-swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let options = self.layer.options();
        Box::pin(async move { Ok(accept(inner, request, options).await) })
    }
}

/// A WebSocket upgrade to Socket.IO offering permessage-deflate in a form we can honour.
///
/// yawc (without its `zlib` feature) always compresses with a 32 KiB window and never answers
/// `server_max_window_bits`, which RFC 7692 requires once a client asks for it: offers with it
/// are declined, and those clients get the direct, uncompressed path. `client_max_window_bits`
/// is harmless (a full-window inflater reads any smaller window). Browsers and Node's `ws` do
/// not ask to limit the server's window.
fn offers_deflate(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',').any(|item| {
                    item.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case(token))
                })
            })
        })
    };
    let limits_server_window = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|offer| {
            offer
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("permessage-deflate"))
        })
        .flat_map(|offer| offer.split(';').skip(1))
        .any(|param| {
            let name = param.split_once('=').map_or(param, |(name, _)| name);
            name.trim().eq_ignore_ascii_case("server_max_window_bits")
        });
    method == Method::GET
        && super::is_socket_io(path)
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::SEC_WEBSOCKET_EXTENSIONS, "permessage-deflate")
        && !limits_server_window
}

/// Connects to Socket.IO in-process, then answers the client's upgrade and spawns the bridge.
async fn accept<S>(inner: S, mut request: Request, options: Options) -> Response
where
    S: Service<Request, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Response: IntoResponse + 'static,
    S::Future: Send + 'static,
{
    // The client's address, for the logs (absent when the listener does not record it).
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let peer_field = peer.map(tracing::field::display);
    let (response, upgrade) = match yawc::WebSocket::upgrade_with_options(&mut request, options) {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::debug!(peer = peer_field, error = %e, "bad WebSocket upgrade request");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    // The body (empty for a GET) is not `Sync`; the rest is what the inner request needs.
    let (outer, _) = request.into_parts();
    let socketio =
        match tokio::time::timeout(INNER_HANDSHAKE_TIMEOUT, connect_inner(inner, &outer)).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(refusal)) => return refusal,
            Err(_) => {
                tracing::error!(
                    peer = peer_field,
                    "in-process Socket.IO handshake timed out"
                );
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        };
    tracing::debug!(
        peer = peer_field,
        extensions = ?response.headers().get(header::SEC_WEBSOCKET_EXTENSIONS),
        "realtime WebSocket accepted (deflate)"
    );
    tokio::spawn(async move {
        match upgrade.await {
            Ok(client) => bridge(client, socketio, peer).await,
            Err(e) => tracing::debug!(
                peer = peer.map(tracing::field::display),
                error = %e,
                "client left during the WebSocket upgrade"
            ),
        }
    });
    response.map(Body::new)
}

/// Opens the inner WebSocket: `inner` served by hyper on one end of a duplex pipe, a
/// tungstenite client on the other. A refusal is returned as the response to give the client.
async fn connect_inner<S>(
    inner: S,
    outer: &axum::http::request::Parts,
) -> Result<WebSocketStream<DuplexStream>, Response>
where
    S: Service<Request, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Response: IntoResponse + 'static,
    S::Future: Send + 'static,
{
    let (client_io, server_io) = tokio::io::duplex(PIPE_BUFFER);

    // The server end: the request arrives as hyper parses it from the pipe; give it the
    // original request's extensions (peer address...), but keep hyper's own upgrade handle.
    let mut extensions = outer.extensions.clone();
    extensions.remove::<hyper::upgrade::OnUpgrade>();
    let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
        let inner = inner.clone();
        let extensions = extensions.clone();
        async move {
            let mut request = request.map(Body::new);
            super::serve::own_head(&mut request);
            request.extensions_mut().extend(extensions);
            let response = inner.oneshot(request).await?;
            Ok::<_, Infallible>(response.into_response())
        }
    });
    tokio::spawn(async move {
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), service)
            .with_upgrades();
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "in-process Socket.IO connection ended");
        }
    });

    // The client end: same path, query and end-to-end headers; the WebSocket handshake headers
    // are tungstenite's own.
    let host = outer
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let path = outer
        .uri
        .path_and_query()
        .map_or("/socket.io/", |p| p.as_str());
    let mut request = format!("ws://{host}{path}")
        .into_client_request()
        .map_err(|e| {
            tracing::debug!(error = %e, "WebSocket request not forwardable");
            StatusCode::BAD_REQUEST.into_response()
        })?;
    for (name, value) in &outer.headers {
        if !is_handshake_header(name) {
            request.headers_mut().append(name, value.clone());
        }
    }
    // Messages from the hub to the client are not capped here (the cap is on what clients send).
    // The read buffer: tungstenite's default is 128 KiB, zero-filled on every read, so resident
    // for as long as the socket lives; the hub's messages are small and the buffer grows for a
    // big one. socketioxide reads with 4 KiB.
    let config = WebSocketConfig::default().read_buffer_size(INNER_READ_BUFFER);
    match tokio_tungstenite::client_async_with_config(request, client_io, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(refusal)) => Err(forward_refusal(*refusal)),
        Err(e) => {
            let peer = outer
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| tracing::field::display(*addr));
            tracing::error!(peer, error = %e, "in-process Socket.IO handshake failed");
            Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

/// The inner handshake's refusal, as the response to give the client.
///
/// tungstenite keeps only the bytes that arrived with the head (`tail`), raw: the body is
/// forwarded when it is all there (a `Content-Length` body, read whole), else the refusal goes
/// out with an empty body (a chunked or cut-short body is never passed on half or still
/// framed). Framing and hop-by-hop headers are dropped: hyper frames the body it is given, and
/// a `Content-Length` longer than the body would make it abort the response.
fn forward_refusal(refusal: tungstenite::http::Response<Option<Vec<u8>>>) -> Response {
    let (mut parts, tail) = refusal.into_parts();
    let mut tail = tail.unwrap_or_default();
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let body = match length {
        Some(length) if !chunked && tail.len() >= length => {
            tail.truncate(length);
            tail
        }
        None if !chunked && tail.is_empty() => Vec::new(),
        _ => {
            tracing::debug!(
                status = %parts.status,
                received = tail.len(),
                ?length,
                chunked,
                "Socket.IO refusal forwarded without its body (not read whole)"
            );
            Vec::new()
        }
    };
    // Headers named by `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let named: Vec<HeaderName> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&[
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::CONTENT_LENGTH,
    ]) {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, Body::from(body))
}

/// Headers that belong to one WebSocket handshake (or one hop) and are not forwarded.
fn is_handshake_header(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_ACCEPT,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ]
    .contains(name)
}

/// How a bridged connection ended.
enum Ending {
    /// The client sent a close frame.
    ClientClosed(Option<CloseFrame>),
    /// The client's connection failed (or broke the protocol, or sent too much).
    ClientFailed(CloseCode, String),
    /// Socket.IO sent a close frame.
    ServerClosed(Option<CloseFrame>),
    /// The inner connection failed.
    ServerFailed(String),
}

type ClientSocket = yawc::WebSocket<yawc::HttpStream>;

/// Moves messages both ways until one side ends, then closes the other. `peer`: the client's
/// address, for the logs.
async fn bridge(
    mut client: ClientSocket,
    mut server: WebSocketStream<DuplexStream>,
    peer: Option<SocketAddr>,
) {
    let ending = loop {
        // Both reads are cancel-safe: their state lives in the sockets, not in the futures.
        tokio::select! {
            frame = client.next_frame() => match frame {
                Ok(frame) => match to_server(frame) {
                    Forward::Message(message) => {
                        if let Err(e) = server.send(message).await {
                            break Ending::ServerFailed(e.to_string());
                        }
                    }
                    Forward::Close(close) => break Ending::ClientClosed(close),
                    Forward::Invalid(reason) => break Ending::ClientFailed(CloseCode::Invalid, reason),
                    Forward::Skip => {}
                },
                Err(e) => {
                    let code = match e {
                        yawc::WebSocketError::FrameTooLarge => CloseCode::Size,
                        _ => CloseCode::Away,
                    };
                    break Ending::ClientFailed(code, e.to_string());
                }
            },
            message = server.next() => match message {
                Some(Ok(Message::Close(close))) => break Ending::ServerClosed(close),
                Some(Ok(message)) => {
                    let Some(frame) = to_client(message) else { continue };
                    match tokio::time::timeout(SEND_TIMEOUT, client.send(frame)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break Ending::ClientFailed(CloseCode::Away, e.to_string()),
                        Err(_) => break Ending::ClientFailed(
                            CloseCode::Away,
                            "client stopped reading".into(),
                        ),
                    }
                }
                Some(Err(e)) => break Ending::ServerFailed(e.to_string()),
                None => break Ending::ServerFailed("closed without a close frame".into()),
            },
        }
    };
    let peer = peer.map(tracing::field::display);
    match ending {
        Ending::ClientClosed(close) => {
            tracing::debug!(peer, ?close, "realtime client closed (deflate)");
            close_server(&mut server, close).await;
            // Our echo of the client's close is queued; reading flushes it.
            let _ = tokio::time::timeout(CLOSE_WAIT, client.next_frame()).await;
        }
        Ending::ClientFailed(code, reason) => {
            if code == CloseCode::Size {
                tracing::warn!(
                    peer,
                    %reason,
                    "realtime message over the size cap: connection closed"
                );
            } else {
                tracing::debug!(peer, %reason, "realtime client connection ended (deflate)");
            }
            // A close frame may be queued by yawc (1009, 1002...); reading flushes it.
            let _ = tokio::time::timeout(CLOSE_WAIT, client.next_frame()).await;
            let close = CloseFrame {
                code: TungCode::from(u16::from(code)),
                reason: Utf8Bytes::from_static(""),
            };
            close_server(&mut server, Some(close)).await;
        }
        Ending::ServerClosed(close) => {
            tracing::debug!(peer, ?close, "Socket.IO closed the connection (deflate)");
            let frame = match &close {
                Some(c) => Frame::close(CloseCode::from(u16::from(c.code)), c.reason.as_bytes()),
                None => Frame::close(CloseCode::Normal, b""),
            };
            close_client(&mut client, frame).await;
            // Finish the inner handshake: tungstenite queued its reply; reading flushes it.
            let _ = tokio::time::timeout(CLOSE_WAIT, server.next()).await;
        }
        Ending::ServerFailed(reason) => {
            tracing::debug!(peer, %reason, "in-process Socket.IO connection failed");
            close_client(&mut client, Frame::close(CloseCode::Away, b"")).await;
        }
    }
}

/// What to do with a frame from the client.
enum Forward {
    Message(Message),
    Close(Option<CloseFrame>),
    Invalid(String),
    Skip,
}

fn to_server(frame: Frame) -> Forward {
    match frame.opcode() {
        OpCode::Text => match Utf8Bytes::try_from(frame.into_payload()) {
            Ok(text) => Forward::Message(Message::Text(text)),
            Err(_) => Forward::Invalid("text message is not UTF-8".into()),
        },
        OpCode::Binary => Forward::Message(Message::Binary(frame.into_payload())),
        OpCode::Close => {
            let close = frame.close_code().map(|code| CloseFrame {
                code: TungCode::from(u16::from(code)),
                reason: frame
                    .close_reason()
                    .ok()
                    .flatten()
                    .map(|r| Utf8Bytes::from(r.to_owned()))
                    .unwrap_or_default(),
            });
            Forward::Close(close)
        }
        // yawc answers pings itself and reassembles fragments.
        OpCode::Ping | OpCode::Pong | OpCode::Continuation => Forward::Skip,
    }
}

fn to_client(message: Message) -> Option<Frame> {
    match message {
        Message::Text(text) => Some(Frame::text(Bytes::from(text))),
        Message::Binary(data) => Some(Frame::binary(data)),
        // tungstenite answers pings itself; raw frames never come out of `next`.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => None,
    }
}

/// Sends `close` to Socket.IO and waits (briefly) for the end of the connection.
async fn close_server(server: &mut WebSocketStream<DuplexStream>, close: Option<CloseFrame>) {
    let finish = async {
        if server.close(close).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = server.next().await {}
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, finish).await;
}

/// Sends `close` to the client and waits (briefly) for its answer.
async fn close_client(client: &mut ClientSocket, close: Frame) {
    let finish = async {
        if client.send(close).await.is_err() {
            return;
        }
        while let Ok(frame) = client.next_frame().await {
            if frame.opcode() == OpCode::Close {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, finish).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_socketio_upgrades_offering_deflate_are_taken() {
        let offer = headers(&[
            ("upgrade", "websocket"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            ),
        ]);
        assert!(offers_deflate(&Method::GET, "/socket.io/", &offer));
        assert!(!offers_deflate(&Method::GET, "/api/modules", &offer));
        assert!(!offers_deflate(&Method::POST, "/socket.io/", &offer));
        let plain = headers(&[("upgrade", "websocket")]);
        assert!(!offers_deflate(&Method::GET, "/socket.io/", &plain));
        let other = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-extensions", "x-webkit-deflate-frame"),
        ]);
        assert!(!offers_deflate(&Method::GET, "/socket.io/", &other));
        let second = headers(&[
            ("upgrade", "WebSocket"),
            ("sec-websocket-extensions", "foo, Permessage-Deflate"),
        ]);
        assert!(offers_deflate(&Method::GET, "/socket.io/", &second));
        let limited = headers(&[
            ("upgrade", "websocket"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; server_max_window_bits=10",
            ),
        ]);
        assert!(!offers_deflate(&Method::GET, "/socket.io/", &limited));
        let client_limit = headers(&[
            ("upgrade", "websocket"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits=10; client_no_context_takeover",
            ),
        ]);
        assert!(offers_deflate(&Method::GET, "/socket.io/", &client_limit));
    }

    fn refusal(headers: &[(&'static str, &str)], tail: &[u8]) -> Response {
        let mut response = tungstenite::http::Response::new(Some(tail.to_vec()));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        for (k, v) in headers {
            response.headers_mut().append(*k, v.parse().unwrap());
        }
        forward_refusal(response)
    }

    async fn body_of(response: Response) -> Bytes {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn refusals_keep_status_and_whole_bodies_only() {
        let json = br#"{"code":"1","message":"Session ID unknown"}"#;
        let length = json.len().to_string();
        let length = length.as_str();

        // Read whole: the same body, no inner framing or hop-by-hop headers.
        let whole = refusal(
            &[
                ("content-type", "application/json"),
                ("content-length", length),
                ("connection", "keep-alive, x-hop"),
                ("keep-alive", "timeout=5"),
                ("x-hop", "1"),
                ("x-end", "2"),
            ],
            json,
        );
        assert_eq!(whole.status(), StatusCode::BAD_REQUEST);
        for gone in ["content-length", "connection", "keep-alive", "x-hop"] {
            assert!(!whole.headers().contains_key(gone), "{gone}");
        }
        assert_eq!(whole.headers()["content-type"], "application/json");
        assert_eq!(whole.headers()["x-end"], "2");
        assert_eq!(body_of(whole).await, &json[..]);

        // Cut short: an empty body rather than a length hyper cannot honour.
        let short = refusal(&[("content-length", length)], &json[..10]);
        assert_eq!(short.status(), StatusCode::BAD_REQUEST);
        assert!(!short.headers().contains_key("content-length"));
        assert!(body_of(short).await.is_empty());

        // Chunked: the raw tail is framing, not the body.
        let chunked = refusal(
            &[("transfer-encoding", "chunked")],
            b"5\r\nhello\r\n0\r\n\r\n",
        );
        assert!(!chunked.headers().contains_key("transfer-encoding"));
        assert!(body_of(chunked).await.is_empty());

        // More than the body (never expected): only the body.
        let mut extra = json.to_vec();
        extra.extend_from_slice(b"HTTP/1.1 200 OK");
        let extra = refusal(&[("content-length", length)], &extra);
        assert_eq!(body_of(extra).await, &json[..]);
    }

    #[test]
    fn handshake_headers_are_not_forwarded() {
        assert!(is_handshake_header(&header::SEC_WEBSOCKET_EXTENSIONS));
        assert!(is_handshake_header(&header::SEC_WEBSOCKET_KEY));
        assert!(!is_handshake_header(&header::COOKIE));
        assert!(!is_handshake_header(&header::ORIGIN));
    }
}
