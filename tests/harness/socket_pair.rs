//! The scaffold of the socket API tests: a server stack on a thread of its own that listens
//! and accepts one connection, and a client stack on the calling thread connected to it (each
//! stack on its own thread, as in production each owns its core).
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bypass::pmd::Port;
use bypass::socket::{Backend, Socket, Stack, StackBuilder};

/// The transport port the server listens on.
pub const PORT: u16 = 7200;

/// One end: its address, its port, and what to set on its stack's builder ([`plain`]: nothing).
pub struct End<P, B> {
    pub ip: Ipv4Addr,
    pub port: P,
    pub build: B,
}

/// A builder left as it is.
pub fn plain(b: StackBuilder) -> StackBuilder {
    b
}

/// Start the server end on a thread: its stack listens, accepts one connection (within 20 s)
/// and hands its stack and the accepted socket to `serve`. Once it listens, build the client
/// end's stack here and connect it to the server (within 10 s). Returns the server's thread
/// (joining it gives what `serve` returned) and the client's stack and socket.
pub fn serve_and_connect<SP, SB, CP, CB, R>(
    server: End<SP, SB>,
    client: End<CP, CB>,
    serve: impl FnOnce(Stack, Socket) -> R + Send + 'static,
) -> (JoinHandle<R>, Stack, Socket)
where
    SP: Port + 'static,
    SB: FnOnce(StackBuilder) -> StackBuilder + Send + 'static,
    CP: Port + 'static,
    CB: FnOnce(StackBuilder) -> StackBuilder,
    R: Send + 'static,
{
    let (up_tx, up_rx) = mpsc::channel();
    let server_ip = server.ip;
    let thread = thread::spawn(move || {
        let stack = (server.build)(Stack::builder(
            Backend::Port(Box::new(server.port)),
            server.ip,
        ))
        .build()
        .unwrap();
        let sock = {
            let listener = stack.listen();
            up_tx.send(()).unwrap();
            listener.accept(Duration::from_secs(20)).unwrap()
        };
        serve(stack, sock)
    });
    up_rx.recv().unwrap();
    let stack = (client.build)(Stack::builder(
        Backend::Port(Box::new(client.port)),
        client.ip,
    ))
    .build()
    .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(server_ip, PORT), Duration::from_secs(10))
        .unwrap();
    (thread, stack, sock)
}
