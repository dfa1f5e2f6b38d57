//! api-container: the auth core served over HTTP on the back-end host.
//!
//! `api-container` serves; `api-container healthcheck [PATH]` asks the running service on this
//! machine for `PATH` (default `/readyz`) and exits 0 on **200**, 1 otherwise. The image is `FROM
//! scratch` (no shell, no curl), so its Docker `HEALTHCHECK` runs the binary itself.

use std::process::ExitCode;

use auth_core::{Application, Config, Error};

const USAGE: &str = "usage: api-container            serve (configuration from the environment)\n       api-container healthcheck [PATH]   GET PATH (default /readyz) on LISTEN_ADDR's port; exit 0 on 200";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(command) = args.next() else {
        return serve_from_env();
    };
    let path = args.next();
    if command != "healthcheck" || args.next().is_some() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let path = match path.as_deref().map(|p| p.to_str()) {
        None => healthcheck::DEFAULT_PATH,
        Some(Some(path)) => path,
        Some(None) => {
            eprintln!("api-container healthcheck: the path is not UTF-8");
            return ExitCode::from(2);
        }
    };
    // Only LISTEN_ADDR is read: a probe must not need the database URL or any secret.
    let listen_addr = std::env::var("LISTEN_ADDR").ok();
    match healthcheck::probe(listen_addr.as_deref(), path) {
        Ok(status) => {
            println!("GET {path}: {status}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            // Docker keeps this output in `docker inspect` (State.Health.Log): say why.
            eprintln!("api-container healthcheck: {reason}");
            // 1 is "unhealthy" to Docker; 2 is reserved by it, so every failure is 1.
            ExitCode::FAILURE
        }
    }
}

/// The service proper, on a multi-threaded runtime that the health probe does not need.
#[tokio::main]
async fn serve_from_env() -> ExitCode {
    // The database settings that can be checked without the database (sslmode, the CA file)
    // are checked here too, so that every bad setting exits 2 before the port is bound.
    let config = match Config::from_env()
        .and_then(|config| auth_core::db::check_settings(&config).map(|()| config))
    {
        Ok(config) => config,
        Err(error) => {
            // Before logging is set up on purpose: this must reach a person even with no logs.
            eprintln!("api-container: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    auth_core::start_logging(&config);
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %auth_core::error::cause_chain(&error), "api-container stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Error> {
    // Bound before the database is reached: health checks get answers (readyz 503) while the
    // database starts after us or restarts, instead of the process exiting in a restart loop.
    let app = Application::bind(config).await?;
    tracing::info!(addr = %app.local_addr()?, "listening");
    app.run_until(auth_core::serve::shutdown_signal()).await
}

/// The probe behind `api-container healthcheck`: plain HTTP/1.1 over a std `TcpStream`, so the
/// image needs nothing but this binary and the probe no async runtime or HTTP client crate.
mod healthcheck {
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    use std::time::Duration;

    pub const DEFAULT_PATH: &str = "/readyz";
    /// The service's own default, so that the probe knocks where the service listens.
    const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:8080";
    /// Per step (connect, write, read). Docker's HEALTHCHECK timeout (3 s in the Dockerfile) is
    /// the outer bound; staying under it means the probe reports its own reason.
    const STEP_TIMEOUT: Duration = Duration::from_millis(1500);
    /// A status line is short; a peer that sends more without a newline is not our service.
    const MAX_STATUS_LINE: usize = 1024;

    /// Where to knock: LISTEN_ADDR's port, on loopback when the service listens on every
    /// address (0.0.0.0 or ::), else on the very address it is bound to.
    pub fn target(listen_addr: Option<&str>) -> Result<SocketAddr, String> {
        let raw = listen_addr.unwrap_or(DEFAULT_LISTEN_ADDR);
        let addr: SocketAddr = raw
            .parse()
            .map_err(|_| format!("LISTEN_ADDR {raw:?} is not an address:port"))?;
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Ok(SocketAddr::new(ip, addr.port()))
    }

    /// GETs `path` from the service; `Ok` with the status line on 200, else why not.
    pub fn probe(listen_addr: Option<&str>, path: &str) -> Result<String, String> {
        // The path goes into the request line: refuse anything that could break out of it.
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{path:?} is not an absolute path without spaces"));
        }
        let addr = target(listen_addr)?;
        let mut stream = TcpStream::connect_timeout(&addr, STEP_TIMEOUT)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(STEP_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(STEP_TIMEOUT)))
            .map_err(|e| format!("cannot set socket timeouts: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: api-container-healthcheck\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
        let line =
            read_status_line(&mut stream).map_err(|e| format!("no answer from {addr}: {e}"))?;
        match parse_status(&line) {
            Some(200) => Ok(line),
            Some(_) => Err(format!("GET {path} answered {line:?}")),
            None => Err(format!("GET {path} got a reply that is not HTTP: {line:?}")),
        }
    }

    /// Reads up to the end of the first line; the rest of the response does not matter.
    fn read_status_line(stream: &mut impl Read) -> std::io::Result<String> {
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < MAX_STATUS_LINE {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
        Ok(String::from_utf8_lossy(&head[..end]).trim_end().to_owned())
    }

    /// `HTTP/1.1 200 OK` -> 200; anything else -> None.
    fn parse_status(line: &str) -> Option<u16> {
        let mut parts = line.split(' ');
        let version = parts.next()?;
        if !version.starts_with("HTTP/") {
            return None;
        }
        let code = parts.next()?;
        if code.len() != 3 {
            return None;
        }
        code.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

        use super::*;
        use std::net::TcpListener;

        /// A one-shot server that answers the first connection with `reply`, in a thread.
        fn answer_once(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let handle = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 1024];
                let n = stream.read(&mut request).unwrap();
                stream.write_all(reply.as_bytes()).unwrap();
                String::from_utf8_lossy(&request[..n]).into_owned()
            });
            (addr, handle)
        }

        #[test]
        fn a_wildcard_listen_address_is_probed_on_loopback() {
            assert_eq!(
                target(Some("0.0.0.0:9000")).unwrap().to_string(),
                "127.0.0.1:9000"
            );
            assert_eq!(target(Some("[::]:9000")).unwrap().to_string(), "[::1]:9000");
            assert_eq!(
                target(Some("127.0.0.2:81")).unwrap().to_string(),
                "127.0.0.2:81"
            );
            assert_eq!(target(None).unwrap().to_string(), "127.0.0.1:8080");
            assert!(target(Some("nowhere")).is_err());
        }

        #[test]
        fn a_200_is_healthy_and_the_request_asks_for_the_path() {
            let (addr, server) = answer_once("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            assert_eq!(probe(Some(&addr), "/readyz").unwrap(), "HTTP/1.1 200 OK");
            let request = server.join().unwrap();
            assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
            assert!(request.contains("Connection: close\r\n"), "{request}");
        }

        #[test]
        fn a_503_is_unhealthy_and_says_so() {
            let (addr, server) =
                answer_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
            let reason = probe(Some(&addr), "/readyz").unwrap_err();
            assert!(reason.contains("503"), "{reason}");
            server.join().unwrap();
        }

        #[test]
        fn a_reply_that_is_not_http_is_unhealthy() {
            let (addr, server) = answer_once("SSH-2.0-OpenSSH\r\n");
            assert!(
                probe(Some(&addr), "/readyz")
                    .unwrap_err()
                    .contains("not HTTP")
            );
            server.join().unwrap();
        }

        #[test]
        fn nothing_listening_is_unhealthy() {
            // Bind then drop: the port was free a moment ago and nothing listens on it now.
            let addr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let reason = probe(Some(&addr.to_string()), "/readyz").unwrap_err();
            assert!(reason.contains("cannot connect"), "{reason}");
        }

        #[test]
        fn a_path_that_would_break_the_request_line_is_refused() {
            assert!(probe(Some("127.0.0.1:1"), "/readyz HTTP/1.0\r\nX: y").is_err());
            assert!(probe(Some("127.0.0.1:1"), "readyz").is_err());
        }

        #[test]
        fn status_lines_parse_strictly() {
            assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
            assert_eq!(parse_status("HTTP/1.0 503"), Some(503));
            assert_eq!(parse_status("HTTP/1.1 2000 OK"), None);
            assert_eq!(parse_status("ICY 200 OK"), None);
            assert_eq!(parse_status(""), None);
        }
    }
}
