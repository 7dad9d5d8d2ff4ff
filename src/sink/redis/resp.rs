//! A small Redis client: RESP2 over TCP, pipelined (every command of a batch written, then every
//! reply read), with time limits on connecting, writing and reading, and bounds on what a reply
//! may make us allocate. Used by the Redis sink's transport and by the API's `/series/`
//! endpoints (a connection each, never shared).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest bulk string accepted in a reply (a stream entry's value is a few bytes).
const MAX_BULK: usize = 64 << 20;
/// Most elements of one reply array (XRANGE is asked for at most this many).
const MAX_ARRAY: usize = 1 << 20;
/// Deepest nesting of reply arrays (XRANGE's is 3).
const MAX_DEPTH: usize = 8;

/// One reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (status or bulk string).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The elements of an array reply (none for a null array or another kind).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: String,
    pub password: Option<String>,
    pub db: u32,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// An open connection (AUTH and SELECT done).
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    peer: String,
}

impl Connection {
    /// Connects, authenticates and selects the database; the error names the address.
    pub fn open(endpoint: &Endpoint) -> io::Result<Connection> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("redis {}: {e}", endpoint.address));
        let addresses: Vec<_> = endpoint.address.to_socket_addrs().map_err(named)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
        for address in addresses {
            match TcpStream::connect_timeout(&address, endpoint.connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(named)?;
                    stream.set_read_timeout(Some(endpoint.timeout)).map_err(named)?;
                    stream.set_write_timeout(Some(endpoint.timeout)).map_err(named)?;
                    let reader = BufReader::with_capacity(64 << 10, stream.try_clone().map_err(named)?);
                    let mut connection = Connection {
                        writer: stream,
                        reader,
                        peer: endpoint.address.clone(),
                    };
                    let mut hello: Vec<Vec<Vec<u8>>> = Vec::new();
                    if let Some(password) = &endpoint.password {
                        hello.push(command(&["AUTH", password]));
                    }
                    if endpoint.db != 0 {
                        hello.push(command(&["SELECT", &endpoint.db.to_string()]));
                    }
                    for reply in connection.pipeline(&hello)? {
                        if let Reply::Error(e) = reply {
                            return Err(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                format!("redis {}: {e}", endpoint.address),
                            ));
                        }
                    }
                    return Ok(connection);
                }
                Err(e) => last = e,
            }
        }
        Err(named(last))
    }

    /// Sends every command, then reads one reply per command, in order.
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> io::Result<Vec<Reply>> {
        let mut out = Vec::with_capacity(commands.len() * 64);
        for command in commands {
            encode(command, &mut out);
        }
        self.writer.write_all(&out).map_err(|e| self.named(e))?;
        self.writer.flush().map_err(|e| self.named(e))?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(read_reply(&mut self.reader, 0).map_err(|e| self.named(e))?);
        }
        Ok(replies)
    }

    fn named(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("redis {}: {e}", self.peer))
    }
}

/// A command from its words.
pub fn command(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// RESP2 array of bulk strings.
fn encode(words: &[Vec<u8>], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(words.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for word in words {
        out.push(b'$');
        out.extend_from_slice(word.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(word);
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed reply: {what}"))
}

/// One line without its CRLF, at most 64 KiB.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let read = reader.take(64 << 10).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad("a line without CRLF, or longer than 64 KiB"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| bad("a line that is not UTF-8"))
}

fn read_reply(reader: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > MAX_DEPTH {
        return Err(bad("arrays nested too deep"));
    }
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || rest.parse::<i64>().map_err(|_| bad("a length that is no number"));
    Ok(match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Integer(number()?),
        "$" => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|_| bad("a length out of range"))?;
            if len > MAX_BULK {
                return Err(bad("a bulk string larger than 64 MiB"));
            }
            let mut data = vec![0; len + 2];
            reader.read_exact(&mut data)?;
            if !data.ends_with(b"\r\n") {
                return Err(bad("a bulk string without CRLF"));
            }
            data.truncate(len);
            Reply::Bulk(Some(data))
        }
        "*" => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let len = usize::try_from(len).map_err(|_| bad("a length out of range"))?;
            if len > MAX_ARRAY {
                return Err(bad("an array longer than 2^20"));
            }
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                items.push(read_reply(reader, depth + 1)?);
            }
            Reply::Array(Some(items))
        }
        _ => return Err(bad("an unknown reply type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut BufReader::new(bytes), 0)
    }

    #[test]
    fn replies_of_every_kind() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Status("OK".into()));
        assert_eq!(parse(b"-ERR no\r\n").unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(parse(b":42\r\n").unwrap(), Reply::Integer(42));
        assert_eq!(parse(b"$3\r\nabc\r\n").unwrap(), Reply::Bulk(Some(b"abc".to_vec())));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n").unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"a".to_vec())),
                Reply::Array(Some(vec![Reply::Integer(1)]))
            ]))
        );
        let mut out = Vec::new();
        encode(&command(&["SET", "k", "v"]), &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
    }

    #[test]
    fn hostile_replies_are_refused_without_allocating_them() {
        for bytes in [
            &b"$99999999999\r\n"[..],
            b"*99999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"?what\r\n",
            b"+no crlf",
            b":x\r\n",
            b"",
        ] {
            assert!(parse(bytes).is_err(), "{:?}", String::from_utf8_lossy(bytes));
        }
        let deep = "*1\r\n".repeat(20) + ":1\r\n";
        assert!(parse(deep.as_bytes()).unwrap_err().to_string().contains("too deep"));
    }
}
