//! The test harness: builds the plugins once, starts real services on random loopback
//! ports (stopped on drop), and runs the real `runbox` binary.
//!
//! A service that cannot start fails the test with the reason; nothing is skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Directory of the built test-only plugins. Builds every plugin on first use, with
/// `scripts/build-plugins`; the first-party ones are found by runbox itself, in the
/// project's `target/wasm32-wasip2/plugin`.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(workspace().join("scripts/build-plugins"))
            .status()
            .expect("cannot run scripts/build-plugins");
        assert!(status.success(), "scripts/build-plugins failed ({status})");
        let target = workspace().join("target/wasm32-wasip2");
        for plugin in [
            "plugin/redis_ping",
            "plugin/webhook-reachable",
            "test-plugin/mischief",
            "test-plugin/sneaky_plan",
            "test-plugin/noop_check",
            "test-plugin/not-a-check",
        ] {
            assert!(
                target.join(format!("{plugin}.wasm")).is_file(),
                "{plugin}.wasm was not built in {}",
                target.display()
            );
        }
        target.join("test-plugin")
    })
}

/// A compile cache shared by the tests of this process (so most loads are warm).
pub fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path()
}

/// The path of a built plugin (test-only or first-party), by file stem.
pub fn plugin(name: &str) -> PathBuf {
    let test_only = plugin_dir().join(format!("{name}.wasm"));
    if test_only.is_file() {
        return test_only;
    }
    workspace()
        .join("target/wasm32-wasip2/plugin")
        .join(format!("{name}.wasm"))
}

/// A runbook written to a temp dir.
pub struct Book {
    /// Its directory (the audit log goes there).
    pub dir: tempfile::TempDir,
    /// The runbook file.
    pub path: PathBuf,
}

impl Book {
    /// Writes `yaml` as `book.yaml` in a new temp dir.
    pub fn new(yaml: &str) -> Book {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.yaml");
        std::fs::write(&path, yaml).unwrap();
        Book { dir, path }
    }

    /// `runbox run BOOK ARGS…`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["run", self.path.to_str().unwrap()];
        all.extend(args);
        runbox(&all)
    }

    /// Where its audit log goes.
    pub fn audit(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }
}

/// The result of step `id` in a run's JSON report (panics, showing the report, if absent).
pub fn step<'a>(json: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id}: {json:#}"))
}

/// The value of metric `name` of a step's JSON result (panics, showing the step, if absent).
pub fn metric(step: &serde_json::Value, name: &str) -> f64 {
    step["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name}: {step}"))["value"]
        .as_f64()
        .unwrap()
}

/// What one `runbox` process did.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time of the process.
    pub elapsed: Duration,
}

impl Run {
    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {self:#?}"))
    }

    /// Metric `name` of the first step of the JSON report (`runbox check --format json`).
    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.json()["steps"][0], name)
    }
}

/// Runs `runbox` with `args` (and the test plugin dir and cache), with `env` added.
pub fn runbox_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    runbox_env_without(args, env, &[])
}

/// Runs `runbox` with `args`.
pub fn runbox(args: &[&str]) -> Run {
    runbox_env(args, &[])
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real redis-server on a random 127.0.0.1 port, killed on drop.
pub struct Redis {
    /// Its port.
    pub port: u16,
    /// Its password, if it requires one.
    pub password: Option<String>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts redis-server without a password.
    pub fn start() -> Redis {
        Redis::start_with(None)
    }

    /// Starts redis-server, requiring `password` if given.
    pub fn start_with(password: Option<&str>) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new("redis-server");
        command
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
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command.spawn().unwrap_or_else(|err| {
            panic!("cannot start redis-server ({err}); install it: apt-get install redis-server")
        });
        let redis = Redis {
            port,
            password: password.map(String::from),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.command(&["PING"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The grant for this server.
    pub fn grant(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command with a native client (authenticating first if needed) and
    /// returns the raw reply.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        if let Some(password) = &self.password {
            send(&mut stream, &["AUTH", password])?;
            read_reply(&mut reader)?;
        }
        send(&mut stream, args)?;
        read_reply(&mut reader)
    }

    /// `total_connections_received` from INFO stats (this query's own connection included).
    pub fn connections_received(&self) -> u64 {
        let info = self.command(&["INFO", "stats"]).expect("INFO stats");
        info.lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .expect("INFO has total_connections_received")
            .trim()
            .parse()
            .unwrap()
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn send(stream: &mut TcpStream, args: &[&str]) -> std::io::Result<()> {
    let mut frame = format!("*{}\r\n", args.len());
    for arg in args {
        frame.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(frame.as_bytes())
}

fn read_reply(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.trim().parse().unwrap();
        if len < 0 {
            return Ok(String::new());
        }
        let mut data = vec![0; len as usize + 2];
        reader.read_exact(&mut data)?;
        data.truncate(len as usize);
        return Ok(String::from_utf8(data).unwrap());
    }
    if line.starts_with('-') {
        return Err(std::io::Error::other(line.trim().to_string()));
    }
    Ok(line.trim().to_string())
}

/// A TCP server that accepts connections and never answers; stops on drop.
pub struct SilentServer {
    /// Its address.
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SilentServer {
    /// Starts it on a random 127.0.0.1 port.
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((socket, _)) = listener.accept() {
                    held.push(socket);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        SilentServer { addr, stop }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How a [`Postgres`] serves TLS.
#[derive(Debug, Clone, Copy)]
pub enum PgTls<'a> {
    /// `ssl=on` with a self-signed certificate for `localhost` (no SAN); every user but
    /// `tls_user` may connect in plaintext too.
    SelfSigned,
    /// `ssl=off`: plaintext only (an SSLRequest is answered 'N').
    Off,
    /// `ssl=on` with this certificate and key (PEM), and only `hostssl` lines: a
    /// plaintext TCP connection is refused.
    Only {
        /// The certificate chain file.
        cert: &'a Path,
        /// The key file.
        key: &'a Path,
    },
    /// `ssl=on` with this certificate and key (PEM), plaintext allowed as with
    /// `SelfSigned`.
    Also {
        /// The certificate chain file.
        cert: &'a Path,
        /// The key file.
        key: &'a Path,
    },
}

/// A real PostgreSQL 15 on a random 127.0.0.1 port (initdb in a temp dir), stopped on
/// drop. Users: `postgres` and `trust_user` (trust), `clear_user` (cleartext password
/// `clear-pw`), `md5_user` (md5, `md5-pw`), `scram_user` (SCRAM-SHA-256, `scram-pw`),
/// `tls_user` (only over TLS). Database `app` holds the `recordings` fixture (see
/// [`Postgres::RECORDINGS`]). Every connection is logged, so tests can count them.
pub struct Postgres {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

impl Postgres {
    /// The fixture: 7 dangling rows (ids 1–7, expired 7 h … 1 h ago; tenant 1 for ids
    /// 1–3, tenant 2 for 4–7), 5 deleted rows that expired, 4 rows not yet expired.
    pub const RECORDINGS: &'static str = "
        CREATE TABLE recordings (id bigserial PRIMARY KEY, name text, tenant int,
                                 deleted_at timestamptz, expires_at timestamptz NOT NULL);
        INSERT INTO recordings (name, tenant, deleted_at, expires_at)
            SELECT 'dangling-' || i, CASE WHEN i <= 3 THEN 1 ELSE 2 END, NULL, now() - make_interval(hours => 8 - i)
            FROM generate_series(1, 7) AS i;
        INSERT INTO recordings (name, tenant, deleted_at, expires_at)
            SELECT 'deleted-' || i, 1, now() - interval '1 hour', now() - interval '2 days' FROM generate_series(1, 5) AS i;
        INSERT INTO recordings (name, tenant, deleted_at, expires_at)
            SELECT 'live-' || i, 1, NULL, now() + interval '1 day' FROM generate_series(1, 4) AS i;
        CREATE TABLE uploads (key text, deleted_at timestamptz, expires_at timestamptz);
        INSERT INTO uploads VALUES ('a', NULL, now() - interval '1 day');
        GRANT SELECT ON recordings, uploads TO PUBLIC;
        GRANT USAGE ON SEQUENCE recordings_id_seq TO PUBLIC;
    ";

    /// initdb, configure, start, create users and the fixture, with TLS on (a
    /// self-signed certificate for `localhost`) and the mixed pg_hba.conf above.
    pub fn start() -> Postgres {
        Postgres::start_with(PgTls::SelfSigned)
    }

    /// initdb, configure, start, create users and the fixture, with `tls`.
    pub fn start_with(tls: PgTls) -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        let root = is_root();
        if root {
            run_ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()));
        }
        let data = dir.path().join("data");
        as_postgres(
            root,
            Command::new(bin.join("initdb")).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
        );
        // With `Only`, TCP has `hostssl` lines alone: a plaintext connection finds no entry
        // and is refused. `tls_user` always needs TLS.
        let tcp = if matches!(tls, PgTls::Only { .. }) {
            "hostssl"
        } else {
            "host"
        };
        let hba = format!(
            "local all all trust\n\
             {tcp} all postgres 127.0.0.1/32 trust\n\
             {tcp} all trust_user 127.0.0.1/32 trust\n\
             {tcp} all clear_user 127.0.0.1/32 password\n\
             {tcp} all md5_user 127.0.0.1/32 md5\n\
             {tcp} all scram_user 127.0.0.1/32 scram-sha-256\n\
             hostssl all tls_user 127.0.0.1/32 trust\n"
        );
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let key = data.join("server.key");
        match tls {
            PgTls::SelfSigned => run_ok(
                Command::new("openssl")
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "1",
                        "-subj",
                        "/CN=localhost",
                        "-keyout",
                    ])
                    .arg(&key)
                    .arg("-out")
                    .arg(data.join("server.crt")),
            ),
            PgTls::Only { cert, key: key_file } | PgTls::Also { cert, key: key_file } => {
                std::fs::copy(cert, data.join("server.crt")).unwrap();
                std::fs::copy(key_file, &key).unwrap();
            }
            PgTls::Off => {}
        }
        if root {
            run_ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data));
        }
        let ssl = if matches!(tls, PgTls::Off) {
            "off"
        } else {
            run_ok(Command::new("chmod").arg("600").arg(&key));
            "on"
        };
        let port = free_port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl={ssl} -c log_connections=on -c fsync=off",
            dir.path().display()
        );
        as_postgres(
            root,
            Command::new(bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .args(["-o", &options, "-w", "start"]),
        );
        let postgres = Postgres {
            port,
            dir,
            running: true,
        };
        postgres.psql(
            "postgres",
            "
            CREATE ROLE trust_user LOGIN; CREATE ROLE tls_user LOGIN;
            CREATE ROLE clear_user LOGIN PASSWORD 'clear-pw';
            SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5-pw';
            SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD 'scram-pw';
        ",
        );
        postgres.psql("postgres", "CREATE DATABASE app");
        postgres.psql("app", Postgres::RECORDINGS);
        postgres
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL as `postgres` in `database` with psql; returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .expect("psql is installed");
        assert!(
            output.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// How many connections the server has received (from its log).
    pub fn connections_received(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        log.matches("connection received:").count()
    }

    /// `postgres://USER@127.0.0.1:PORT/app`.
    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/app", self.port)
    }

    /// The grant for this server.
    pub fn grant(&self) -> String {
        format!("postgres://127.0.0.1:{}", self.port)
    }

    /// Stops the server now (immediate shutdown).
    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            as_postgres(
                is_root(),
                Command::new(pg_bin().join("pg_ctl"))
                    .arg("-D")
                    .arg(self.dir.path().join("data"))
                    .args(["-m", "immediate", "-w", "stop"]),
            );
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pg_bin() -> PathBuf {
    let bin = PathBuf::from("/usr/lib/postgresql/15/bin");
    assert!(
        bin.join("postgres").is_file(),
        "PostgreSQL 15 server binaries are missing in {}: apt-get install postgresql-15",
        bin.display()
    );
    bin
}

fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("id");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

fn as_postgres(root: bool, command: &mut Command) {
    if root {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(program)
                .args(args),
        );
    } else {
        run_ok(command);
    }
}

fn run_ok(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A request the test HTTP server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Body.
    pub body: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What a route answers: status, body, and how long to wait before answering.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body (sent as application/json when it starts with `{`).
    pub body: String,
    /// Delay before the answer.
    pub delay: Duration,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// An immediate answer.
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    /// The same answer with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The same answer after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Route = Box<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

/// A real HTTP/1.1 server on a random 127.0.0.1 port (a thread per connection), with
/// routes given by the test; records every request. Stops on drop.
pub struct HttpServer {
    /// Its address.
    pub addr: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HttpServer {
    /// Starts a server whose `route(request, n)` answers; `n` counts earlier requests
    /// to the same method and path.
    pub fn start(route: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Received>::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let route: std::sync::Arc<Route> = std::sync::Arc::new(Box::new(route));
        let (log, flag) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((socket, _)) => {
                        let (route, log) = (route.clone(), log.clone());
                        std::thread::spawn(move || serve(socket, &route, &log));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        HttpServer { addr, received, stop }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn serve(socket: TcpStream, route: &Route, log: &std::sync::Mutex<Vec<Received>>) {
    socket.set_nonblocking(false).ok();
    socket.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    // The whole body, as a real server reads it before answering: a client that sends
    // its last chunk after the answer went would find the connection reset.
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        read_chunked(&mut reader)
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok();
        body
    };
    let request = Received {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
        headers,
    };
    let earlier = {
        let mut log = log.lock().unwrap();
        let earlier = log
            .iter()
            .filter(|r| r.method == request.method && r.path == request.path)
            .count();
        log.push(request.clone());
        earlier
    };
    let reply = route(&request, earlier);
    std::thread::sleep(reply.delay);
    let kind = if reply.body.starts_with('{') {
        "application/json"
    } else {
        "text/plain"
    };
    let extra: String = reply.headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let response = format!(
        "HTTP/1.1 {} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    );
    let mut socket = socket;
    let _ = socket.write_all(response.as_bytes());
}

/// A `transfer-encoding: chunked` body (RFC 9112 §7.1), up to its last chunk and
/// trailer section; what arrived, if the connection ends first.
fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return body;
        };
        if size == 0 {
            break;
        }
        let mut chunk = vec![0; size + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
    loop {
        let mut trailer = String::new();
        if reader.read_line(&mut trailer).unwrap_or(0) == 0 || trailer == "\r\n" {
            return body;
        }
    }
}

/// A real S3-compatible server (s3s-fs) on a random 127.0.0.1 port, verifying SigV4
/// with its own implementation (s3s), serving the buckets under a temp dir. Objects
/// are created on disk, where s3s-fs reads them (their mtime is their LastModified).
pub struct S3Server {
    /// Its address.
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    /// The access key the server accepts.
    pub const ACCESS_KEY: &'static str = "AKIDRUNBOXTEST0001";
    /// The secret key the server accepts.
    pub const SECRET_KEY: &'static str = "runbox-test-secret-0123456789abcdef";

    /// Starts it.
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs root");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            S3Server::ACCESS_KEY,
            S3Server::SECRET_KEY,
        ));
        let service = builder.build();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let connection = http
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        S3Server {
            addr,
            root,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates `bucket/key` with `bytes`, last modified `age` ago.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8], age: Duration) {
        let path = self.root.path().join(bucket).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age).unwrap();
    }

    /// Creates an empty bucket.
    pub fn bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).unwrap();
    }

    /// Every file under the bucket's directory on disk, as relative paths, sorted
    /// (what s3s-fs stores, whatever its listing says).
    pub fn files(&self, bucket: &str) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let base = self.root.path().join(bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    }

    /// Whether `bucket/key` exists.
    pub fn exists(&self, bucket: &str, key: &str) -> bool {
        self.root.path().join(bucket).join(key).is_file()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The `runbox` binary with `args`, the test plugins and the tests' compile cache, and
/// without `RUST_LOG` (whose log lines would change stderr).
pub fn runbox_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbox"));
    command
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .args(args)
        .env("RUNBOX_CACHE_DIR", cache_dir())
        .env_remove("RUST_LOG");
    command
}

/// Runs `runbox` like [`runbox_env`], but with `remove` taken out of its environment
/// (e.g. proxies and certificate settings, so a test's TLS trust is exactly its own).
pub fn runbox_env_without(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> Run {
    // The first use builds the plugins: before the clock starts, so `elapsed` is runbox's.
    let mut command = runbox_command(args);
    for key in remove {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let Output { status, stdout, stderr } = command.output().expect("runbox runs");
    Run {
        code: status.code().expect("runbox exited normally, not by a signal"),
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        elapsed: started.elapsed(),
    }
}

/// What the HTTPS test server answers for one path.
#[derive(Debug, Clone)]
pub struct HttpsReply {
    /// Status code.
    pub status: u16,
    /// Body, sent with its content-length (unless `content_length` or `stream` says otherwise).
    pub body: Vec<u8>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// A content-length to announce instead of the body's own.
    pub content_length: Option<u64>,
    /// Send this many zero bytes without a content-length (the body ends at the close).
    pub stream: Option<usize>,
}

impl HttpsReply {
    /// `200` with `body`.
    pub fn ok(body: &[u8]) -> HttpsReply {
        HttpsReply::status(200, body)
    }

    /// `status` with `body`.
    pub fn status(status: u16, body: &[u8]) -> HttpsReply {
        HttpsReply {
            status,
            body: body.to_vec(),
            headers: Vec::new(),
            content_length: None,
            stream: None,
        }
    }

    /// A redirect to `location`.
    pub fn redirect(location: &str) -> HttpsReply {
        let mut reply = HttpsReply::status(302, b"");
        reply.headers.push(("location".into(), location.into()));
        reply
    }
}

/// A test certificate authority: its certificate as a PEM file (for `SSL_CERT_FILE`) and
/// a leaf certificate for 127.0.0.1 and localhost signed by it.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem_file: PathBuf,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA, made with rcgen in this process.
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("runbox e2e test CA {:016x}", rand::random::<u64>()),
        );
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem_file = dir.path().join("ca.pem");
        std::fs::write(&pem_file, ca_cert.pem()).unwrap();
        TestCa {
            pem_file,
            leaf: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
            _dir: dir,
        }
    }
}

type HttpsRoute = Box<dyn Fn(&str) -> HttpsReply + Send + Sync>;

/// A real HTTPS (TLS 1.2/1.3, rustls) server on a random 127.0.0.1 port, a thread per
/// connection, with a certificate from its own [`TestCa`]. Records each request's path.
/// [`HttpsServer::stop`] (or drop) closes the port.
pub struct HttpsServer {
    /// Its address.
    pub addr: SocketAddr,
    /// The CA its certificate chains to; point `SSL_CERT_FILE` at `ca.pem_file`.
    pub ca: TestCa,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl HttpsServer {
    /// Starts a server whose `route(path)` answers each GET.
    pub fn start(route: impl Fn(&str) -> HttpsReply + Send + Sync + 'static) -> HttpsServer {
        let ca = TestCa::new();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![ca.leaf.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(ca.leaf_key.clone().into()),
            )
            .unwrap();
        let config = std::sync::Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let route: std::sync::Arc<HttpsRoute> = std::sync::Arc::new(Box::new(route));
        let (log, flag) = (requests.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((socket, _)) => {
                        let (route, log, config) = (route.clone(), log.clone(), config.clone());
                        std::thread::spawn(move || serve_tls(socket, config, &route, &log));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            // The listener is dropped here: the port refuses connections from now on.
        });
        HttpsServer {
            addr,
            ca,
            requests,
            stop,
            accept: Some(accept),
        }
    }

    /// `https://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The path of every request so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Stops accepting and closes the port.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_tls(
    socket: TcpStream,
    config: std::sync::Arc<rustls::ServerConfig>,
    route: &HttpsRoute,
    log: &std::sync::Mutex<Vec<String>>,
) {
    socket.set_nonblocking(false).ok();
    socket.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(connection, socket);
    // The request head, byte by byte up to the blank line (GETs have no body).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return, // a failed handshake (e.g. the client distrusts the certificate) ends here
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(path.clone());
    let reply = route(&path);
    let mut response = format!("HTTP/1.1 {} X\r\nconnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.stream.is_none() {
        let length = reply.content_length.unwrap_or(reply.body.len() as u64);
        response.push_str(&format!("content-length: {length}\r\n"));
    }
    response.push_str("\r\n");
    if tls.write_all(response.as_bytes()).is_err() || tls.write_all(&reply.body).is_err() {
        return;
    }
    if let Some(total) = reply.stream {
        let chunk = vec![0u8; 64 << 10];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            if tls.write_all(&chunk[..n]).is_err() {
                return; // the client stopped reading, as it should past its cap
            }
            sent += n;
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// A listener on `ip` (a random port) that accepts connections and records every byte it
/// receives; returns its port and the bytes.
pub fn recording_listener(ip: &str) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                socket.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (port, received)
}
