//! `switchyard-floor`: the bare actix-web + reqwest hop, what any actix-web gateway pays at least (for the benchmark).
//!
//! Usage: switchyard-floor --upstream URL [--listen ADDR] [--workers N] [--api-key KEY]
//!        switchyard-floor UPSTREAM_URL PORT [WORKERS]      (floor-actix's arguments, binding 127.0.0.1:PORT)
//! `POST /v1/chat/completions` forwards the body to URL (one reqwest client: TCP_NODELAY, up to 256 idle
//! connections; `Authorization: Bearer KEY` with `--api-key`, as a gateway sends its provider key) and answers
//! the upstream's status and body; 502 when the upstream cannot be reached. `--workers` defaults to 1, as the
//! gateway's `server.workers`. `--listen` defaults to 127.0.0.1:0.
//! Prints `listening on http://ADDR` once bound, then serves until killed.

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::io::Write;

struct Hop {
    client: reqwest::Client,
    upstream: String,
    authorization: Option<reqwest::header::HeaderValue>,
}

async fn forward(hop: web::Data<Hop>, body: web::Bytes) -> HttpResponse {
    let mut request = hop.client.post(&hop.upstream).header("content-type", "application/json");
    if let Some(authorization) = &hop.authorization {
        request = request.header("authorization", authorization.clone());
    }
    match request.body(body).send().await {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = response.bytes().await.unwrap_or_default();
            HttpResponse::build(status).content_type("application/json").body(body)
        }
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

fn number(flag: &str, value: &str) -> std::io::Result<usize> {
    value.parse::<usize>().map_err(|_| invalid(format!("{flag}: not a number: {value}")))
}

const USAGE: &str = "usage: switchyard-floor --upstream URL [--listen ADDR] [--workers N] [--api-key KEY]\n       \
                     switchyard-floor UPSTREAM_URL PORT [WORKERS]";

#[allow(clippy::print_stdout)]
fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut upstream = None;
    let mut listen = "127.0.0.1:0".to_string();
    let mut workers = 1usize;
    let mut api_key = None;
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].clone();
        i += 1;
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        if !arg.starts_with("--") {
            positional.push(arg);
            continue;
        }
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), v.to_string()),
            None => {
                let v = args.get(i).cloned().ok_or_else(|| invalid(format!("{arg} needs a value")))?;
                i += 1;
                (arg, v)
            }
        };
        match flag.as_str() {
            "--upstream" => upstream = Some(value),
            "--listen" => listen = value,
            "--workers" => workers = number(&flag, &value)?,
            "--api-key" => api_key = Some(value),
            _ => return Err(invalid(format!("unknown argument: {flag}\n{USAGE}"))),
        }
    }
    let mut positional = positional.into_iter();
    if let Some(url) = positional.next() {
        upstream = Some(url);
    }
    if let Some(port) = positional.next() {
        listen = format!("127.0.0.1:{}", number("PORT", &port)?);
    }
    if let Some(n) = positional.next() {
        workers = number("WORKERS", &n)?;
    }
    if let Some(extra) = positional.next() {
        return Err(invalid(format!("unexpected argument: {extra}\n{USAGE}")));
    }
    let upstream = upstream.ok_or_else(|| invalid(format!("no upstream URL\n{USAGE}")))?;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| std::io::Error::other(format!("cannot build the HTTP client: {e}")))?;
    let authorization = match api_key {
        Some(key) => Some(
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| invalid("--api-key: not a valid header value".into()))?,
        ),
        None => None,
    };
    let hop = web::Data::new(Hop { client, upstream, authorization });
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new().app_data(hop.clone()).route("/v1/chat/completions", web::post().to(forward))
        })
        .workers(workers.max(1))
        .bind(listen.as_str())?;
        let addr = server.addrs().first().copied().ok_or_else(|| invalid(format!("{listen}: nothing bound")))?;
        println!("listening on http://{addr}");
        std::io::stdout().flush()?;
        server.run().await
    })
}
