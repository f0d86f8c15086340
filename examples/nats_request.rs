//! Sends one NATS request with the official `nats` client and prints the reply body.
//!
//! An independent client, not Shardline's own: when it gets a decision back from the
//! router over NATS (plain, TLS, or TLS with a client certificate), the two speak the same
//! protocol, not merely the same bugs. `scripts/validate_nats_tls.sh` uses it.
//!
//! ```text
//! cargo run --example nats_request -- --url nats://127.0.0.1:4222 \
//!     --body-file config/requests/chat.json
//! cargo run --example nats_request -- --url tls://127.0.0.1:4222 \
//!     --ca _artifacts/certs/ca.crt --cert _artifacts/certs/client.crt \
//!     --key _artifacts/certs/client.key --tenant-id acme --body '{"request_id":"r1",...}'
//! ```
//!
//! Exit codes: 0 a reply was printed, 1 connect failure, 2 no reply in time (or no
//! responder on the subject), 3 unusable arguments.

// The sync `nats` crate marks its API deprecated in favour of async-nats; a blocking
// one-shot client is exactly what is wanted here, and it is the client the platform uses.
#![allow(deprecated)]

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Send one NATS request (official nats client) and print the reply body")]
struct Args {
    /// Server URL(s), comma-separated: nats://host:port or tls://host:port.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Subject to send the request to.
    #[arg(long, default_value = "beamline.router.v1.decide")]
    subject: String,
    /// Request body (a DecideRequest for the decide subject).
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// File holding the request body; `-` reads standard input.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// `tenant_id` header (wins over the body's field).
    #[arg(long)]
    tenant_id: Option<String>,
    /// `trace_id` header.
    #[arg(long)]
    trace_id: Option<String>,
    /// How long to wait for the reply.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// PEM CA that signed the server's certificate (implies TLS).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Token authentication.
    #[arg(long, conflicts_with = "user")]
    token: Option<String>,
    /// User authentication (with --password).
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// Password of --user.
    #[arg(long, requires = "user")]
    password: Option<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; unusable arguments exit 3, not clap's 2.
            return ExitCode::from(if e.use_stderr() { 3 } else { 0 });
        }
    };
    let body = match read_body(&args) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("nats_request: cannot read the body: {e}");
            return ExitCode::from(3);
        }
    };
    let connection = match options(&args).connect(args.url.as_str()) {
        Ok(connection) => connection,
        Err(e) => {
            eprintln!("nats_request: cannot connect to {}: {e}", args.url);
            return ExitCode::from(1);
        }
    };
    let headers = headers(&args);
    let timeout = Duration::from_millis(args.timeout_ms);
    let reply = connection.request_with_headers_or_timeout(
        &args.subject,
        headers.as_ref(),
        Some(timeout),
        &body,
    );
    match reply {
        Ok(message) => {
            println!("{}", String::from_utf8_lossy(&message.data));
            connection.close();
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "nats_request: no responder on {} ({})",
                args.subject, args.url
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!(
                "nats_request: no reply on {} within {} ms: {e}",
                args.subject, args.timeout_ms
            );
            ExitCode::from(2)
        }
    }
}

fn read_body(args: &Args) -> std::io::Result<Vec<u8>> {
    match (&args.body, &args.body_file) {
        (Some(body), _) => Ok(body.clone().into_bytes()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body)?;
            Ok(body)
        }
        (None, Some(path)) => std::fs::read(path),
        (None, None) => Ok(Vec::new()),
    }
}

fn options(args: &Args) -> nats::Options {
    let mut options = match (&args.token, &args.user, &args.password) {
        (Some(token), _, _) => nats::Options::with_token(token),
        (None, Some(user), Some(password)) => nats::Options::with_user_pass(user, password),
        _ => nats::Options::new(),
    };
    // One attempt per server: a tool that fails fast (the count includes the first connect).
    options = options
        .with_name("nats_request")
        .max_reconnects(1)
        .reconnect_delay_callback(|_| Duration::ZERO);
    if let Some(ca) = &args.ca {
        options = options.tls_required(true).add_root_certificate(ca);
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        options = options.client_cert(cert, key);
    }
    options
}

fn headers(args: &Args) -> Option<nats::HeaderMap> {
    if args.tenant_id.is_none() && args.trace_id.is_none() {
        return None;
    }
    let mut headers = nats::HeaderMap::new();
    if let Some(tenant) = &args.tenant_id {
        headers.insert("tenant_id", tenant.clone());
    }
    if let Some(trace) = &args.trace_id {
        headers.insert("trace_id", trace.clone());
    }
    Some(headers)
}
