//! A TCP proxy between the browser and the hub that can cut the network: every open connection
//! is closed at once, and new ones are refused (accepted and reset) or blackholed (accepted and
//! left hanging, never answered) until [`Proxy::heal`].

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// What happens to new connections while the network is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Accepted and closed with a reset at once (as a refused connection looks to a browser).
    Refuse,
    /// Accepted and left open without an answer until the network heals (then closed).
    Blackhole,
}

#[derive(Debug)]
struct State {
    /// `Some` while cut.
    cut: Option<CutMode>,
    /// Cancelled by `cut`: ends every connection opened before it.
    generation: CancellationToken,
    /// Cancelled by `heal`: ends the blackholed connections.
    blackhole: CancellationToken,
    cuts: u64,
}

/// The proxy; it stops when dropped.
pub struct Proxy {
    /// Where browsers connect.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            cut: None,
            generation: CancellationToken::new(),
            blackhole: CancellationToken::new(),
            cuts: 0,
        }));
        let stop = CancellationToken::new();
        let accept_state = Arc::clone(&state);
        let accept_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = accept_stop.cancelled() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let (cut, generation, blackhole) = {
                    let s = accept_state.lock().unwrap_or_else(PoisonError::into_inner);
                    (s.cut, s.generation.clone(), s.blackhole.clone())
                };
                let stop = accept_stop.clone();
                tokio::spawn(async move {
                    match cut {
                        Some(CutMode::Refuse) => reset(client),
                        Some(CutMode::Blackhole) => {
                            tokio::select! {
                                () = blackhole.cancelled() => {}
                                () = stop.cancelled() => {}
                            }
                            reset(client);
                        }
                        None => forward(client, upstream, generation, stop).await,
                    }
                });
            }
        });
        Ok(Self { addr, state, stop })
    }

    /// Cuts the network: closes every open connection; new ones get `mode` until [`Self::heal`].
    pub fn cut(&self, mode: CutMode) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.cut = Some(mode);
        s.cuts += 1;
        s.generation.cancel();
        s.generation = CancellationToken::new();
    }

    /// Heals the network: blackholed connections are closed, new ones are forwarded again.
    pub fn heal(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.cut = None;
        s.blackhole.cancel();
        s.blackhole = CancellationToken::new();
    }

    /// How many times the network was cut.
    pub fn cuts(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cuts
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Closes with a reset (linger 0), as a refused or torn connection looks to the peer.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    generation: CancellationToken,
    stop: CancellationToken,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        // The hub is down: the browser sees the connection fail.
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        () = generation.cancelled() => {
            reset(client);
            reset(server);
        }
        () = stop.cancelled() => {}
    }
}
