//! Talking to Warden over its control socket ([`warden_control::Client`]) within one time
//! budget for the whole command.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use warden_control::{AttachInfo, AttachSpec, Client, ClientError, Reply, Request};

/// Why a conversation with Warden failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// Nobody answers: no socket, nobody listening, the connection broke, or no reply within
    /// the budget (`timed_out`: Warden may still carry out the request later).
    Unreachable {
        /// What happened.
        why: String,
        /// The budget ran out waiting for a reply.
        timed_out: bool,
    },
    /// Warden answered with an error (or refused the connection: permission, protocol major).
    Refused(String),
    /// Warden's reply was not the one the request calls for.
    Protocol(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Unreachable { why, .. } | Fail::Refused(why) | Fail::Protocol(why) => f.write_str(why),
        }
    }
}

/// A connection to Warden that has exchanged protocol versions, with a deadline.
pub struct Warden {
    client: Client,
    socket: String,
    deadline: Instant,
    budget: Duration,
}

impl Warden {
    /// Connects to `socket` and says hello (the protocol majors must agree); every later
    /// request must be answered within `budget` of this call.
    ///
    /// # Errors
    /// [`Fail::Unreachable`] when no Warden listens there or it does not answer in time;
    /// [`Fail::Refused`] when it refuses this client (permission, protocol version).
    pub fn connect(socket: &str, budget: Duration) -> Result<Self, Fail> {
        let deadline = Instant::now() + budget;
        let client = Client::connect(socket).map_err(|e| classify(e, socket, budget))?;
        let mut w = Self { client, socket: socket.to_string(), deadline, budget };
        w.arm()?;
        w.client.hello().map_err(|e| classify(e, socket, budget))?;
        Ok(w)
    }

    fn arm(&mut self) -> Result<(), Fail> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fail::Unreachable { why: self.timeout_msg(), timed_out: true });
        }
        self.client.set_timeout(Some(left)).map_err(|e| classify(e, &self.socket, self.budget))
    }

    fn timeout_msg(&self) -> String {
        format!("no reply from Warden on {} within {} ms", self.socket, self.budget.as_millis())
    }

    fn request(&mut self, req: &Request) -> Result<Reply, Fail> {
        self.arm()?;
        self.client.request(req).map_err(|e| classify(e, &self.socket, self.budget))
    }

    /// Sends [`Request::Attach`] and waits for [`Reply::Attached`]: Warden answers once the
    /// attachment forwards and every worker enforces the workload's policy.
    ///
    /// # Errors
    /// As [`Warden::connect`]; [`Fail::Refused`] with Warden's reason; [`Fail::Protocol`] for
    /// another reply.
    pub fn attach(&mut self, spec: AttachSpec) -> Result<AttachInfo, Fail> {
        match self.request(&Request::Attach { spec })? {
            Reply::Attached(info) => Ok(info),
            other => Err(Fail::Protocol(format!("unexpected reply to attach: {other:?}"))),
        }
    }

    /// Sends [`Request::Detach`] for `name` and waits for the reply.
    ///
    /// # Errors
    /// As [`Warden::attach`].
    pub fn detach(&mut self, name: &str) -> Result<(), Fail> {
        match self.request(&Request::Detach { name: name.to_string() })? {
            Reply::Done(_) => Ok(()),
            other => Err(Fail::Protocol(format!("unexpected reply to detach: {other:?}"))),
        }
    }

    /// Warden's current attachments ([`Request::ListAttachments`]).
    ///
    /// # Errors
    /// As [`Warden::attach`].
    pub fn attachments(&mut self) -> Result<Vec<AttachInfo>, Fail> {
        match self.request(&Request::ListAttachments {})? {
            Reply::Attachments(list) => Ok(list),
            other => Err(Fail::Protocol(format!("unexpected reply to list_attachments: {other:?}"))),
        }
    }
}

fn classify(e: ClientError, socket: &str, budget: Duration) -> Fail {
    match e {
        ClientError::Io { source, .. } => match source.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Fail::Unreachable {
                why: format!("no reply from Warden on {socket} within {} ms", budget.as_millis()),
                timed_out: true,
            },
            ErrorKind::NotFound
            | ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::NotConnected => Fail::Unreachable {
                why: format!("Warden is not reachable on {socket}: {source} (is `warden run` running?)"),
                timed_out: false,
            },
            _ => Fail::Refused(format!("control socket {socket}: {source}")),
        },
        ClientError::Closed => {
            Fail::Unreachable { why: format!("Warden closed the connection on {socket}"), timed_out: false }
        }
        ClientError::Daemon(m) | ClientError::Version(m) => Fail::Refused(m),
        ClientError::Protocol(m) => Fail::Protocol(m),
        ClientError::Lost(l) => Fail::Protocol(format!("unexpected report stream message: {l:?}")),
    }
}
