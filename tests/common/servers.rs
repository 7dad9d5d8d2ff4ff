//! Real servers for tests: carbon-cache, InfluxDB 1.6, HAProxy 2.6 instances with admin stats
//! sockets and a python3 http.server behind them, each started per test in its own temp
//! dir on free loopback ports, in the foreground, and stopped by pid (SIGTERM, then SIGKILL) when
//! dropped, also when the test panics. Every wait is bounded.
#![allow(dead_code)]

use super::wait_for;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start or stop before the test fails.
pub const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0). Another
/// process could take it before the server binds it; the kernel hands out ports in turn, so that
/// is rare, and the server then fails to start with its log in the panic message.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// True once something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts_connections(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

/// A server process started by a test, stopped by its pid when dropped.
pub struct ServerProcess {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `command` with its output going to `log`.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> ServerProcess {
        let output = fs::File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} (is it installed?)"));
        ServerProcess {
            name,
            child: Some(child),
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Panics with the server's log if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL if it is still running after a while; reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One value in a whisper file.
pub type Point = (i64, Option<f64>);

/// A carbon-cache accepting plaintext lines on 127.0.0.1:`line_port`, storing every metric
/// at 1-second resolution for an hour under `dir/whisper`.
pub struct Carbon {
    pub dir: tempfile::TempDir,
    pub line_port: u16,
    process: Option<ServerProcess>,
}

impl Carbon {
    /// Starts carbon-cache on a free port.
    pub fn start() -> Carbon {
        Carbon::start_on(free_tcp_port())
    }

    /// Starts carbon-cache with its line receiver on `line_port`.
    pub fn start_on(line_port: u16) -> Carbon {
        let dir = tempfile::tempdir().unwrap();
        let mut carbon = Carbon {
            dir,
            line_port,
            process: None,
        };
        carbon.restart();
        carbon
    }

    /// Starts (again) on the same port and storage; waits until it accepts lines.
    pub fn restart(&mut self) {
        self.stop();
        let d = self.dir.path();
        fs::create_dir_all(d.join("log")).unwrap();
        fs::write(d.join("carbon.conf"), self.config()).unwrap();
        fs::write(
            d.join("storage-schemas.conf"),
            "[all]\npattern = .*\nretentions = 1s:1h\n",
        )
        .unwrap();
        let mut command = Command::new("carbon-cache");
        command
            .arg(format!("--config={}", d.join("carbon.conf").display()))
            .arg(format!("--pidfile={}", d.join("carbon.pid").display()))
            .arg(format!("--logdir={}", d.join("log").display()))
            .args(["--nodaemon", "start"]);
        let mut process = ServerProcess::spawn("carbon-cache", command, &d.join("console.out"));
        wait_for("carbon-cache to accept lines", START_LIMIT, None, || {
            process.assert_running();
            accepts_connections(self.line_port)
        });
        self.process = Some(process);
    }

    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Debian's carbon.conf with every path in the temp dir and every port free or off.
    fn config(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "[cache]\nSTORAGE_DIR = {d}/\nLOCAL_DATA_DIR = {d}/whisper/\nCONF_DIR = {d}/\nLOG_DIR = {d}/log/\n\
             PID_DIR = {d}/\nUSER =\nDATABASE = whisper\nENABLE_LOGROTATION = False\nMAX_CACHE_SIZE = inf\n\
             MAX_UPDATES_PER_SECOND = inf\nMAX_CREATES_PER_MINUTE = inf\nMIN_TIMESTAMP_RESOLUTION = 1\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {}\nENABLE_UDP_LISTENER = False\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {}\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {}\nLOG_UPDATES = False\n\
             LOG_CREATES = False\nCACHE_WRITE_STRATEGY = sorted\nWHISPER_AUTOFLUSH = True\n",
            self.line_port,
            free_tcp_port(),
            free_tcp_port(),
        )
    }

    /// The whisper file of a dotted metric path.
    pub fn whisper_file(&self, path: &str) -> PathBuf {
        let mut file = self.dir.path().join("whisper");
        file.extend(path.split('.'));
        file.set_extension("wsp");
        file
    }

    /// The points of `path` from `from` to `until` (unix seconds), as `whisper-fetch` reads
    /// them; empty if the file does not exist yet.
    pub fn fetch(&self, path: &str, from: i64, until: i64) -> Vec<Point> {
        let file = self.whisper_file(path);
        if !file.exists() {
            return Vec::new();
        }
        let output = Command::new("whisper-fetch")
            .args(["--json", &format!("--from={}", from - 1), &format!("--until={until}")])
            .arg(&file)
            .output()
            .expect("whisper-fetch runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let (start, step) = (json["start"].as_i64().unwrap(), json["step"].as_i64().unwrap());
        let values = json["values"].as_array().unwrap();
        (0..values.len())
            .map(|i| (start + step * i as i64, values[i].as_f64()))
            .filter(|(time, _)| (from..=until).contains(time))
            .collect()
    }

    /// Waits until `path` holds `value` at `time`, returning the points around it.
    pub fn wait_for_point(&self, path: &str, time: i64, value: f64) -> Vec<Point> {
        let mut points = Vec::new();
        wait_for(
            &format!("{path} = {value} at {time} in whisper"),
            START_LIMIT,
            None,
            || {
                points = self.fetch(path, time - 2, time + 2);
                points.contains(&(time, Some(value)))
            },
        );
        points
    }
}

/// How to set up an InfluxDB instance.
#[derive(Clone, Debug, Default)]
pub struct InfluxSetup {
    /// Require authentication; an admin user `admin` / `admin-secret` is created.
    pub auth: bool,
    /// Enable a `[[udp]]` listener writing into this database.
    pub udp_database: Option<&'static str>,
}

pub const INFLUX_ADMIN: (&str, &str) = ("admin", "admin-secret");

/// An InfluxDB 1.6 server with its HTTP API on 127.0.0.1:`http_port`.
pub struct Influx {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub udp_port: Option<u16>,
    setup: InfluxSetup,
    process: Option<ServerProcess>,
}

impl Influx {
    /// Starts influxd and waits until `/ping` answers; creates the admin user with `auth`.
    pub fn start(setup: InfluxSetup) -> Influx {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_tcp_port();
        let udp_port = setup.udp_database.map(|_| free_udp_port());
        let mut influx = Influx {
            dir,
            http_port,
            udp_port,
            setup,
            process: None,
        };
        let config = influx.dir.path().join("influxdb.conf");
        fs::write(&config, influx.config()).unwrap();
        let mut command = Command::new("influxd");
        command.arg("-config").arg(&config);
        let mut process = ServerProcess::spawn("influxd", command, &influx.dir.path().join("influxd.log"));
        wait_for("influxd to answer /ping", START_LIMIT, None, || {
            process.assert_running();
            influx.ping()
        });
        influx.process = Some(process);
        if influx.setup.auth {
            let (user, password) = INFLUX_ADMIN;
            influx.query_unauthenticated(
                None,
                &format!("CREATE USER {user} WITH PASSWORD '{password}' WITH ALL PRIVILEGES"),
            );
        }
        influx
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        let udp = match (self.setup.udp_database, self.udp_port) {
            (Some(database), Some(port)) => format!(
                "[[udp]]\nenabled = true\nbind-address = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\n\
                 batch-timeout = \"50ms\"\n"
            ),
            _ => String::new(),
        };
        format!(
            "reporting-enabled = false\nbind-address = \"127.0.0.1:{}\"\n[meta]\ndir = \"{d}/meta\"\n\
             [data]\ndir = \"{d}/data\"\nwal-dir = \"{d}/wal\"\nquery-log-enabled = false\n\
             [monitor]\nstore-enabled = false\n[continuous_queries]\nenabled = false\n\
             [http]\nbind-address = \"127.0.0.1:{}\"\nlog-enabled = false\nauth-enabled = {}\n\
             [logging]\nlevel = \"warn\"\n{udp}",
            free_tcp_port(),
            self.http_port,
            self.setup.auth,
        )
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn ping(&self) -> bool {
        ureq::get(format!("{}/ping", self.url()))
            .call()
            .is_ok_and(|r| r.status().as_u16() == 204)
    }

    /// Runs `statement` (as admin when auth is on) and returns the JSON answer; panics on an
    /// HTTP error or a statement error.
    pub fn query(&self, database: Option<&str>, statement: &str) -> serde_json::Value {
        let credentials = self.setup.auth.then_some(INFLUX_ADMIN);
        let answer = self.query_with(database, statement, credentials);
        assert!(answer["results"][0].get("error").is_none(), "{statement}: {answer}");
        answer
    }

    fn query_unauthenticated(&self, database: Option<&str>, statement: &str) -> serde_json::Value {
        self.query_with(database, statement, None)
    }

    fn query_with(
        &self,
        database: Option<&str>,
        statement: &str,
        credentials: Option<(&str, &str)>,
    ) -> serde_json::Value {
        let mut request = ureq::post(format!("{}/query", self.url())).query("epoch", "ns");
        if let Some(database) = database {
            request = request.query("db", database);
        }
        if let Some((user, password)) = credentials {
            request = request.query("u", user).query("p", password);
        }
        let mut response = request
            .send_form([("q", statement)])
            .unwrap_or_else(|e| panic!("query {statement}: {e}"));
        serde_json::from_reader(response.body_mut().as_reader()).unwrap()
    }

    pub fn create_database(&self, name: &str) {
        self.query(None, &format!("CREATE DATABASE \"{name}\""));
    }

    /// The rows of `SELECT * FROM <measurement>` (timestamps in ns) as JSON objects keyed by
    /// column name; empty while there are none.
    pub fn rows(&self, database: &str, from: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let credentials = self.setup.auth.then_some(INFLUX_ADMIN);
        // Until the first point arrives the database may not exist: that is "no rows yet".
        let answer = self.query_with(Some(database), &format!("SELECT * FROM {from}"), credentials);
        let Some(series) = answer["results"][0]["series"].as_array() else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        for one in series {
            let columns: Vec<String> = one["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            for values in one["values"].as_array().unwrap() {
                let row = columns.iter().cloned().zip(values.as_array().unwrap().iter().cloned());
                rows.push(row.filter(|(_, v)| !v.is_null()).collect());
            }
        }
        rows
    }

    /// Waits until `SELECT * FROM <from>` returns `count` rows, and returns them.
    pub fn wait_for_rows(
        &self,
        database: &str,
        from: &str,
        count: usize,
    ) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut rows = Vec::new();
        wait_for(&format!("{count} rows in {database}.{from}"), START_LIMIT, None, || {
            rows = self.rows(database, from);
            rows.len() >= count
        });
        rows
    }

    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }
}

/// A static HTTP server (`python3 -m http.server`) on 127.0.0.1:`port`, serving an empty
/// directory listing: the backend HAProxy sends test traffic to.
pub struct PythonHttp {
    pub dir: tempfile::TempDir,
    pub port: u16,
    process: ServerProcess,
}

impl PythonHttp {
    pub fn start() -> PythonHttp {
        let dir = tempfile::tempdir().unwrap();
        let port = free_tcp_port();
        let mut command = Command::new("python3");
        command
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir.path());
        let log = dir.path().join("http.log");
        let mut process = ServerProcess::spawn("python3 -m http.server", command, &log);
        wait_for("python3 http.server to accept connections", START_LIMIT, None, || {
            process.assert_running();
            accepts_connections(port)
        });
        PythonHttp { dir, port, process }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

/// How to set up HAProxy instances for a test: every instance has the same frontends,
/// backends and servers (as the processes of one HAProxy would), with dotted names
/// `fe.<n>`, `be.<n>`, `srv.<backend>.<n>`.
#[derive(Clone, Debug)]
pub struct HaproxySetup {
    pub instances: usize,
    /// Frontends per instance: `fe.0` listens on a TCP port (see [`HaproxyInstance`]), the
    /// others on UNIX sockets in the temp dir; `fe.<n>` uses backend `be.<n % backends>`.
    pub frontends: usize,
    pub backends: usize,
    pub servers_per_backend: usize,
    /// The last instance has no UNIX stats socket but `stats socket ipv4@127.0.0.1:PORT`.
    pub tcp_stats: bool,
    /// Port on 127.0.0.1 every server points to (a [`PythonHttp`] for traffic); no health
    /// checks are configured, so nothing needs to listen there unless traffic is sent.
    pub server_port: u16,
}

impl Default for HaproxySetup {
    fn default() -> Self {
        HaproxySetup {
            instances: 1,
            frontends: 2,
            backends: 2,
            servers_per_backend: 2,
            tcp_stats: false,
            server_port: 9,
        }
    }
}

/// One HAProxy process with an admin stats socket.
pub struct HaproxyInstance {
    /// Its UNIX stats socket (in [`Haproxy::socket_dir`]), unless it has a TCP one.
    pub socket: Option<PathBuf>,
    /// Its TCP stats port, with `tcp_stats`.
    pub tcp_stats_port: Option<u16>,
    /// The TCP port of frontend `fe.0`.
    pub frontend_port: u16,
    process: ServerProcess,
}

impl HaproxyInstance {
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

/// HAProxy instances started in the foreground (`-db`) from generated configs in a temp dir,
/// stopped by pid when dropped (also when the test panics).
pub struct Haproxy {
    pub dir: tempfile::TempDir,
    /// Holds the UNIX stats sockets, `haproxy-<n>.sock` (n from 1), and nothing else.
    pub socket_dir: PathBuf,
    pub instances: Vec<HaproxyInstance>,
}

impl Haproxy {
    /// Starts every instance and waits until each answers on its stats socket.
    pub fn start(setup: &HaproxySetup) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let socket_dir = dir.path().join("sockets");
        fs::create_dir_all(&socket_dir).unwrap();
        fs::create_dir_all(dir.path().join("frontends")).unwrap();
        let mut haproxy = Haproxy {
            dir,
            socket_dir,
            instances: Vec::new(),
        };
        for number in 1..=setup.instances {
            let tcp = setup.tcp_stats && number == setup.instances;
            let instance = haproxy.start_instance(setup, number, tcp);
            haproxy.instances.push(instance);
        }
        haproxy
    }

    fn start_instance(&self, setup: &HaproxySetup, number: usize, tcp_stats: bool) -> HaproxyInstance {
        let socket = (!tcp_stats).then(|| self.socket_dir.join(format!("haproxy-{number}.sock")));
        let tcp_stats_port = tcp_stats.then(free_tcp_port);
        let frontend_port = free_tcp_port();
        let stats_line = match (&socket, tcp_stats_port) {
            (Some(path), _) => format!("stats socket {} mode 600 level admin", path.display()),
            (None, Some(port)) => format!("stats socket ipv4@127.0.0.1:{port} level admin"),
            (None, None) => unreachable!("an instance has one stats socket"),
        };
        let config = self.dir.path().join(format!("haproxy-{number}.cfg"));
        fs::write(&config, self.config(setup, number, &stats_line, frontend_port)).unwrap();
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&config);
        let log = self.dir.path().join(format!("haproxy-{number}.log"));
        let mut process = ServerProcess::spawn("haproxy", command, &log);
        wait_for(
            &format!("haproxy {number} to answer on its stats socket"),
            START_LIMIT,
            None,
            || {
                process.assert_running();
                match (&socket, tcp_stats_port) {
                    (Some(path), _) => std::os::unix::net::UnixStream::connect(path).is_ok(),
                    (None, Some(port)) => accepts_connections(port),
                    (None, None) => false,
                }
            },
        );
        HaproxyInstance {
            socket,
            tcp_stats_port,
            frontend_port,
            process,
        }
    }

    fn config(&self, setup: &HaproxySetup, number: usize, stats_line: &str, frontend_port: u16) -> String {
        use std::fmt::Write;
        let mut config = format!(
            "global\n    {stats_line}\n    stats timeout 30s\n\ndefaults\n    mode http\n    \
             timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\n"
        );
        for n in 0..setup.frontends {
            let bind = if n == 0 {
                format!("127.0.0.1:{frontend_port}")
            } else {
                let path = self.dir.path().join(format!("frontends/{number}-{n}.sock"));
                format!("unix@{}", path.display())
            };
            let backend = n % setup.backends.max(1);
            writeln!(
                config,
                "frontend fe.{n}\n    bind {bind}\n    default_backend be.{backend}\n"
            )
            .unwrap();
        }
        for b in 0..setup.backends {
            writeln!(config, "backend be.{b}").unwrap();
            for s in 0..setup.servers_per_backend {
                writeln!(config, "    server srv.{b}.{s} 127.0.0.1:{}", setup.server_port).unwrap();
            }
            config.push('\n');
        }
        config
    }

    /// Sends `count` `GET /` requests through frontend `fe.0` of instance `index` (from 0) and
    /// panics unless each is answered with 200.
    pub fn send_requests(&self, index: usize, count: usize) {
        use std::io::{Read, Write};
        let port = self.instances[index].frontend_port;
        for _ in 0..count {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            let status = answer.lines().next().unwrap_or_default().to_owned();
            assert!(status.contains(" 200 "), "through haproxy: {status:?}");
        }
    }
}

/// dnsmasq answering on 127.0.0.1:`port` (UDP and TCP) from its command line only: no system
/// config, no /etc/hosts, no upstream.
pub struct Dnsmasq {
    pub dir: tempfile::TempDir,
    pub port: u16,
    process: Option<ServerProcess>,
}

impl Dnsmasq {
    /// Starts dnsmasq with `srv` records, each `(name, target, port)`.
    pub fn start(port: u16, srv: &[(&str, &str, u16)]) -> Dnsmasq {
        let mut dnsmasq = Dnsmasq {
            dir: tempfile::tempdir().unwrap(),
            port,
            process: None,
        };
        dnsmasq.restart(srv);
        dnsmasq
    }

    /// Starts it again (same port) with other records; waits until it answers a query.
    pub fn restart(&mut self, srv: &[(&str, &str, u16)]) {
        self.stop();
        let mut command = Command::new("dnsmasq");
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--user=root",
            "--log-queries",
            "--log-facility=-",
            &format!("--port={}", self.port),
        ]);
        for (name, target, port) in srv {
            command.arg(format!("--srv-host={name},{target},{port}"));
        }
        let log = self.dir.path().join("dnsmasq.log");
        let mut process = ServerProcess::spawn("dnsmasq", command, &log);
        let port = self.port;
        wait_for("dnsmasq to answer", START_LIMIT, None, || {
            process.assert_running();
            accepts_connections(port)
        });
        self.process = Some(process);
    }

    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }
}

/// An HTTP server on 127.0.0.1 that answers every request with the status and body set last
/// (a stand-in for Consul's HTTP API, which cannot be installed here: it replays Consul's
/// documented JSON). Counts the requests.
pub struct ReplayServer {
    pub port: u16,
    answer: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ReplayServer {
    pub fn start(status: u16, body: &str) -> ReplayServer {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = std::sync::Arc::new(std::sync::Mutex::new((status, body.to_string())));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (shared, count) = (answer.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (status, body) = shared.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        ReplayServer { port, answer, requests }
    }

    pub fn set(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }
}

/// A real `redis-server` (Debian's) on `port` in the foreground, nothing saved to disk, killed
/// when dropped (a test kills it on purpose by dropping it).
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (make test-deps installs it)");
        let server = Redis { child, port };
        wait_for("redis-server answering", START_LIMIT, None, || {
            redis_cli(port, &["PING"]).trim() == "PONG"
        });
        server
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-cli` (an independent client) on `port`: its output, or "" when it cannot connect.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
