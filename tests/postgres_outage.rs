//! PostgreSQL cut off while a gateway serves (a TCP proxy between them drops every connection and refuses new
//! ones): a call that cannot hold its credits is refused 503 `overloaded`, never 500; a call whose settlement
//! cannot be written is refused 503 with nothing charged, and its hold is freed once the database is back; then
//! calls are served again and the wallet is its credits less exactly what the records charge. SKIPPED without
//! PostgreSQL; under `make test` it is always there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mock::{MockConfig, MockServer};
use common::{mock_env, Gateway};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy that can be cut (every connection dropped, new ones closed at once) and mended.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn to(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (is_open, all) = (open.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                all.lock().unwrap().push(link.abort_handle());
            }
        });
        Proxy { port, open, links }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.links.lock().unwrap().drain(..).for_each(|link| link.abort());
    }

    fn mend(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[actix_web::test]
async fn postgres_cut_off_mid_run_refuses_503_charges_nothing_and_recovers() {
    let Some(url) = common::backends::postgres_database("outage").await else { return };
    let parsed = url::Url::parse(&url).unwrap();
    let target = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
    let proxy = Proxy::to(target).await;
    let mut proxied = parsed.clone();
    proxied.set_port(Some(proxy.port)).unwrap();
    let mock =
        MockServer::start(MockConfig { ttft: Duration::from_millis(1_500), ..MockConfig::default() }).await.unwrap();
    let db = proxied.to_string();
    let gw = Gateway::start(mock_env(&mock), move |c| c.database.url = db).await;
    let (ws, key) = gw.workspace("10", 100, 10, 1_000_000).await;
    assert_eq!(gw.chat(&key).await.0, 200);
    let before = gw.settled(&key).await;

    // Cut while a call is upstream: its settlement cannot be written.
    let (call_gw, call_key) = (&gw, key.clone());
    let in_flight = async move { call_gw.chat(&call_key).await };
    let cutter = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.cut();
    };
    let ((status, body), ()) = futures::join!(in_flight, cutter);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    // A new call cannot hold its credits.
    let started = Instant::now();
    let (status, body) = gw.chat(&key).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("overloaded")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(30), "refused, not hung");

    // Back: the cut call's hold is freed (nothing charged for it), and calls are served again.
    proxy.mend();
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.settled(&key).await != before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gw.settled(&key).await, before, "the cut call's hold came back; nothing was charged for it");
    assert_eq!(gw.chat(&key).await.0, 200);
    let records = gw.usage(&ws).await;
    assert_eq!(records.len(), 2, "one record per call served: {records:?}");
    let charged: i64 = records.iter().map(|(_, credits, _)| credits).sum();
    assert_eq!(gw.settled(&key).await, (10_000 - charged, 0), "the wallet is exact");
}
