//! Blocking client for the control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::{
    check_version, CaptureInfo, CaptureSpec, Hello, Lost, Reply, ReportBatch, Request, Response, Subscribed, PROTOCOL_VERSION,
};

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing the socket failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon sent a line that is not a [`Response`].
    #[error("bad response from daemon: {0}")]
    Protocol(String),
    /// The daemon answered `{"ok":false,"error":...}`.
    #[error("warden: {0}")]
    Daemon(String),
    /// The daemon closed the connection.
    #[error("daemon closed the connection")]
    Closed,
    /// The daemon and this client speak different major protocol versions.
    #[error("{0}")]
    Version(String),
    /// Messages of the report stream were dropped before this subscriber read them
    /// ([`Client::next_report`] only; [`Client::next_message`] returns them as
    /// [`Reply::Lost`]).
    #[error("report stream: lost {} records and {} events (seq {}..={}, {})", .0.records, .0.events, .0.from_seq, .0.to_seq, .0.reason)]
    Lost(Lost),
}

/// A connection to the daemon: one request, one response, in order.
pub struct Client {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the socket at `path`.
    ///
    /// # Errors
    /// [`ClientError::Io`] when the socket does not exist or refuses (is Warden running?).
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let p = path.as_ref().display().to_string();
        let io = |source| ClientError::Io { path: p.clone(), source };
        let stream = UnixStream::connect(path.as_ref()).map_err(io)?;
        stream.set_write_timeout(Some(Duration::from_secs(10))).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Self { path: p, reader: BufReader::new(stream), writer })
    }

    /// Bounds how long each following read of a reply and write of a request may block
    /// (`None`: reads wait forever, as after [`Client::connect`]; writes keep their 10 s). A
    /// read that runs out fails with [`ClientError::Io`] of kind `WouldBlock` or `TimedOut`.
    ///
    /// # Errors
    /// [`ClientError::Io`] when `timeout` is zero.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.reader.get_ref().set_read_timeout(timeout).map_err(self.io())?;
        self.writer.set_write_timeout(timeout.or(Some(Duration::from_secs(10)))).map_err(self.io())
    }

    fn io(&self) -> impl Fn(std::io::Error) -> ClientError + '_ {
        move |source| ClientError::Io { path: self.path.clone(), source }
    }

    /// Sends one raw line (without the newline) and returns the raw response line. For tests
    /// and debugging of malformed input.
    ///
    /// # Errors
    /// [`ClientError::Io`] or [`ClientError::Closed`].
    pub fn raw(&mut self, line: &str) -> Result<String, ClientError> {
        let mut buf = line.as_bytes().to_vec();
        buf.push(b'\n');
        self.writer.write_all(&buf).map_err(self.io())?;
        self.read_line()
    }

    fn read_line(&mut self) -> Result<String, ClientError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(self.io())?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        Ok(line)
    }

    fn read_response(&mut self) -> Result<Reply, ClientError> {
        let line = self.read_line()?;
        let resp: Response = serde_json::from_str(line.trim_end())
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", line.trim_end())))?;
        match (resp.ok, resp.reply) {
            (true, Some(reply)) => Ok(reply),
            (true, None) => Err(ClientError::Protocol("ok without payload".into())),
            (false, _) => Err(ClientError::Daemon(resp.error.unwrap_or_default())),
        }
    }

    /// Sends `req` and waits for its reply.
    ///
    /// # Errors
    /// [`ClientError::Daemon`] when the daemon refused the request; I/O and protocol errors.
    pub fn request(&mut self, req: &Request) -> Result<Reply, ClientError> {
        let line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut buf = line.into_bytes();
        buf.push(b'\n');
        if let Err(e) = self.writer.write_all(&buf) {
            // The daemon may have refused the connection (permission, connection cap) with
            // an error line and closed it before the request was written: report its reason.
            return match self.read_response() {
                Err(ClientError::Daemon(m)) => Err(ClientError::Daemon(m)),
                _ => Err((self.io())(e)),
            };
        }
        self.read_response()
    }

    /// Exchanges protocol versions ([`Request::Hello`] with [`PROTOCOL_VERSION`]) and returns
    /// the server's answer.
    ///
    /// # Errors
    /// [`ClientError::Version`] when the majors differ (said by the daemon, or found here);
    /// otherwise as [`Client::request`].
    pub fn hello(&mut self) -> Result<Hello, ClientError> {
        let req = Request::Hello {
            version: PROTOCOL_VERSION.into(),
            client: Some(format!("warden-control {}", env!("CARGO_PKG_VERSION"))),
        };
        match self.request(&req) {
            Ok(Reply::Hello(h)) => {
                check_version(PROTOCOL_VERSION, &h.version, "daemon").map_err(ClientError::Version)?;
                Ok(h)
            }
            Ok(other) => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
            Err(ClientError::Daemon(e)) if e.contains("protocol version") => Err(ClientError::Version(e)),
            Err(ClientError::Daemon(e)) if e.contains("unknown variant `hello`") => Err(ClientError::Version(format!(
                "the daemon predates protocol versions (this client speaks {PROTOCOL_VERSION}): {e}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Subscribes to the report stream from now on; returns the report interval (s). Then
    /// call [`Client::next_report`] or [`Client::next_message`] in a loop.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub fn subscribe(&mut self) -> Result<u64, ClientError> {
        Ok(self.subscribe_since(None, None)?.interval_s)
    }

    /// Subscribes to the report stream after sequence number `since` of daemon run `epoch`
    /// (see [`Request::Subscribe`]).
    ///
    /// # Errors
    /// As [`Client::request`].
    pub fn subscribe_since(&mut self, since: Option<u64>, epoch: Option<u64>) -> Result<Subscribed, ClientError> {
        match self.request(&Request::Subscribe { since, epoch })? {
            Reply::Subscribed(s) => Ok(s),
            other => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// Blocks for the next report batch of a subscription (events in between are skipped; see
    /// [`Client::next_message`]).
    ///
    /// # Errors
    /// [`ClientError::Lost`] when messages of the stream were dropped (the subscription goes
    /// on: call again); [`ClientError::Closed`] when the daemon stops; I/O and protocol
    /// errors.
    pub fn next_report(&mut self) -> Result<ReportBatch, ClientError> {
        loop {
            match self.next_message()? {
                Reply::Report(b) => return Ok(b),
                Reply::Event(_) => continue,
                Reply::Lost(l) => return Err(ClientError::Lost(l)),
                other => return Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
            }
        }
    }

    /// Blocks for the next message of a subscription: [`Reply::Report`], [`Reply::Event`] or
    /// [`Reply::Lost`].
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the daemon stops; I/O errors; a protocol error for any
    /// other reply.
    pub fn next_message(&mut self) -> Result<Reply, ClientError> {
        match self.read_response()? {
            r @ (Reply::Report(_) | Reply::Event(_) | Reply::Lost(_)) => Ok(r),
            other => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// Runs a streamed capture ([`Request::CaptureStart`] with `spec.stream` set): calls
    /// `started` with the capture's description, writes its pcapng bytes to `out` as they come
    /// (flushed after each chunk, so a reader such as `tshark -r -` decodes live), and returns
    /// the final description when the capture ends. The connection is used up.
    ///
    /// # Errors
    /// The daemon refused the capture; I/O (also writing to `out`), protocol or base64 errors.
    pub fn capture_stream(
        &mut self,
        spec: &CaptureSpec,
        started: impl FnOnce(&CaptureInfo),
        out: &mut impl Write,
    ) -> Result<CaptureInfo, ClientError> {
        use base64::Engine as _;
        let mut spec = spec.clone();
        spec.stream = true;
        match self.request(&Request::CaptureStart { spec })? {
            Reply::Capture(info) => started(&info),
            other => return Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
        }
        loop {
            match self.read_response()? {
                Reply::CaptureData(d) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(d.data.as_bytes())
                        .map_err(|e| ClientError::Protocol(format!("capture data: {e}")))?;
                    let io = |source| ClientError::Io { path: "output".into(), source };
                    out.write_all(&bytes).map_err(io)?;
                    out.flush().map_err(io)?;
                }
                Reply::CaptureEnd(info) => return Ok(info),
                other => return Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
            }
        }
    }
}
