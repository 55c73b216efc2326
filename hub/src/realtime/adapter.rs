//! The hub's Socket.IO adapter: socketioxide's local adapter, plus a handle on it
//! ([`RootNamespace`]) with which [`super::delivery`] sends each event, encoded once, to every
//! socket it goes to. socketioxide's `emit` encodes the event again for each socket, from an
//! empty buffer that grows as it goes: 15 % of the hub's CPU in fan-in to 4 dashboards, and
//! most of the allocator's work (BENCHMARKS.md). A broadcast to one socket id takes the encoded
//! arguments as they are and still says, for that socket, whether its buffer was full.

use std::{
    convert::Infallible,
    sync::{Arc, OnceLock},
    time::Duration,
};

use serde::Serialize;
use socketioxide::{SocketIo, SocketIoBuilder, adapter::Emitter, extract::SocketRef, socket::Sid};
use socketioxide_core::{
    Str, Value,
    adapter::{BroadcastOptions, CoreAdapter, CoreLocalAdapter, DefinedAdapter, SocketEmitter},
    packet::Packet,
};

/// The Socket.IO server of the hub, with its adapter.
pub type Io = SocketIo<HubAdapter>;
/// A socket of the hub's Socket.IO server.
pub type Socket = SocketRef<HubAdapter>;

/// A Socket.IO builder with the hub's adapter, and the handle [`super::EventsManager`] sends
/// through once the root namespace exists.
pub fn builder() -> (SocketIoBuilder<HubAdapter>, RootNamespace) {
    let root = RootNamespace::default();
    (
        SocketIo::builder().with_adapter::<HubAdapter>(root.clone()),
        root,
    )
}

/// The local adapter of the root namespace (`/`, the only one the hub serves), once created
/// (the hub creates it once, at startup).
#[derive(Clone, Default)]
pub struct RootNamespace(Arc<OnceLock<Arc<CoreLocalAdapter<Emitter>>>>);

impl RootNamespace {
    /// Sends `args` as one event to socket `sid`.
    pub fn send(&self, sid: Sid, args: &Encoded) -> Result<(), socketioxide::SocketError> {
        let Some(local) = self.0.get() else {
            // No namespace, hence no socket yet.
            return Err(socketioxide::SocketError::Closed);
        };
        let packet = Packet::event(local.path().clone(), args.0.clone());
        match local.broadcast(packet, BroadcastOptions::new(sid)) {
            Ok(()) => Ok(()),
            Err(mut errors) => match errors.pop() {
                Some(e) => Err(e),
                None => Ok(()),
            },
        }
    }
}

/// An event and its arguments, JSON-encoded once (`["event", data, offset]`), to send to any
/// number of sockets: each send shares the same bytes.
#[derive(Clone, Debug)]
pub struct Encoded(Value);

impl Encoded {
    /// `event` with the arguments `data` and `offset` (the stream offset), as
    /// `socket.emit(event, &(data, offset))` would send them. `size_hint`: `data`'s encoded
    /// size, if known, so that the buffer is allocated once.
    pub fn event<T: Serialize + ?Sized>(
        event: &str,
        data: &T,
        offset: u64,
        size_hint: usize,
    ) -> Result<Self, serde_json::Error> {
        let mut json = Vec::with_capacity(event.len() + size_hint + 32);
        serde_json::to_writer(&mut json, &(event, data, offset))?;
        let text = String::from_utf8(json).map_err(serde::ser::Error::custom)?;
        Ok(Self(Value::Str(Str::from(text), None)))
    }
}

/// socketioxide's local adapter, shared with [`RootNamespace`].
pub struct HubAdapter(Arc<CoreLocalAdapter<Emitter>>);

impl CoreAdapter<Emitter> for HubAdapter {
    type Error = Infallible;
    type State = RootNamespace;
    type AckStream = <Emitter as SocketEmitter>::AckStream;
    type InitRes = ();

    fn new(state: &RootNamespace, local: CoreLocalAdapter<Emitter>) -> Self {
        let local = Arc::new(local);
        if local.path().as_str() == "/" && state.0.set(local.clone()).is_err() {
            tracing::warn!("the root namespace was created again: events go to the first one");
        }
        Self(local)
    }

    fn init(self: Arc<Self>, on_success: impl FnOnce() + Send + 'static) {
        on_success();
    }

    async fn broadcast_with_ack(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Option<Duration>,
    ) -> Result<Self::AckStream, Infallible> {
        Ok(self.0.broadcast_with_ack(packet, opts, timeout).0)
    }

    fn get_local(&self) -> &CoreLocalAdapter<Emitter> {
        &self.0
    }
}

impl DefinedAdapter for HubAdapter {}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    #[test]
    fn an_event_is_encoded_as_emit_would_send_its_arguments() {
        let payload = RawValue::from_string(r#"{"moduleId":"MC-1","v":[1,2.5]}"#.into()).unwrap();
        let encoded = Encoded::event("rt_telemetry_updated", &*payload, 42, 0).unwrap();
        let Value::Str(text, None) = &encoded.0 else {
            panic!("not a text event: {encoded:?}");
        };
        assert_eq!(
            text.as_str(),
            r#"["rt_telemetry_updated",{"moduleId":"MC-1","v":[1,2.5]},42]"#
        );
    }

    #[test]
    fn nothing_is_sent_before_the_namespace_exists() {
        let (_builder, root) = builder();
        let encoded = Encoded::event("rt_x", &1, 1, 0).unwrap();
        assert!(matches!(
            root.send(Sid::new(), &encoded),
            Err(socketioxide::SocketError::Closed)
        ));
    }
}
